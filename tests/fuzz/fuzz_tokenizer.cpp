// Hugging Face tokenizer.json files (WordPiece, CLIP BPE) and loom's own: load, then encode.
#include "data/text_tokenizer.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = loom::fuzz::as_file(data, size, ".json");
  loom::fuzz::expect_only_loom_errors([&] {
    auto tok = loom::data::load_tokenizer(path);
    (void)tok->encode_batch({"a photo of a café", "", "东京 ##x [CLS] <|endoftext|>"}, 16);
  });
  return 0;
}
