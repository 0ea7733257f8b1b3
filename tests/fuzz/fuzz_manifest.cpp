#include "data/manifest.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = loom::fuzz::as_file(data, size, ".jsonl");
  loom::fuzz::expect_only_loom_errors([&] { (void)loom::data::Manifest::load(path); });
  return 0;
}
