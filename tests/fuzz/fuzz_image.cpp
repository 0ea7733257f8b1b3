#include "data/image.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  loom::fuzz::expect_only_loom_errors([&] { (void)loom::data::decode_image_bytes(data, size, 3, "fuzz"); });
  return 0;
}
