// WebDataset shards: the libarchive index, key grouping, .cls/.json/.txt members, and under skip the
// samples kept before damage.
#include "data/webdataset.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = loom::fuzz::as_file(data, size, ".tar");
  loom::fuzz::expect_only_loom_errors([&] { (void)loom::data::load_webdataset(path, "fail"); });
  loom::fuzz::expect_only_loom_errors([&] { (void)loom::data::load_webdataset(path, "skip"); });
  return 0;
}
