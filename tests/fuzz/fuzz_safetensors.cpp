#include "core/safetensors.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = loom::fuzz::as_file(data, size, ".safetensors");
  loom::fuzz::expect_only_loom_errors([&] { (void)loom::load_safetensors(path); });
  return 0;
}
