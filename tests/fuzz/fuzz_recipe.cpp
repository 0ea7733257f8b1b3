// The recipe loader through Recipe validation (not only yaml-cpp): missing files are allowed, as
// under --check, so the fuzzer reaches the checks behind the paths.
#include "trainers/recipe.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  loom::fuzz::expect_only_loom_errors([&] {
    loom::Config c = loom::Config::parse(text, "fuzz.yaml");
    c.allow_missing_files();
    (void)loom::Recipe::from(c);
  });
  return 0;
}
