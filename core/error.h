// loom's exceptions. Every bad call of an op (shape, dtype or device mismatch) throws OpError,
// whose message names the op and shows each operand's dtype and shape.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace loom {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct OpError : Error {
  using Error::Error;
};

// Builds a message from streamable pieces: LOOM_FAIL("bad ", x) throws Error.
template <class... Args> std::string str_cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace loom

#define LOOM_CHECK(cond, ...) \
  do { if (!(cond)) throw ::loom::Error(::loom::str_cat(__VA_ARGS__)); } while (0)
