#include "data/unicode.h"
#include <utf8proc.h>
#include <cstdlib>
#include "core/error.h"

namespace loom::data::unicode {

std::vector<CodePoint> decode(const std::string& s) {
  std::vector<CodePoint> out;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = utf8proc_ssize_t(s.size());
  while (left > 0) {
    utf8proc_int32_t c;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &c);
    if (n <= 0) c = 0xFFFD, n = 1;
    out.push_back(c);
    p += n;
    left -= n;
  }
  return out;
}

void append(std::string& out, CodePoint c) {
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(c, buf);
  out.append(reinterpret_cast<const char*>(buf), size_t(n));
}

std::string to_utf8(const std::vector<CodePoint>& cps) {
  std::string s;
  for (CodePoint c : cps) append(s, c);
  return s;
}

bool is_whitespace(CodePoint c) {
  return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_letter(CodePoint c) {
  const auto k = utf8proc_category(c);
  return k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO;
}

bool is_number(CodePoint c) {
  const auto k = utf8proc_category(c);
  return k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO;
}

bool is_punctuation(CodePoint c) {
  const auto k = utf8proc_category(c);
  return k >= UTF8PROC_CATEGORY_PC && k <= UTF8PROC_CATEGORY_PO;
}

bool is_other(CodePoint c) {
  const auto k = utf8proc_category(c);
  return k == UTF8PROC_CATEGORY_CN || (k >= UTF8PROC_CATEGORY_CC && k <= UTF8PROC_CATEGORY_CO);
}

bool is_nonspacing_mark(CodePoint c) { return utf8proc_category(c) == UTF8PROC_CATEGORY_MN; }

CodePoint to_lower(CodePoint c) { return utf8proc_tolower(c); }

namespace {
std::string mapped(const std::string& s, utf8proc_uint8_t* (*fn)(const utf8proc_uint8_t*), const char* what) {
  // utf8proc stops at the first NUL: map the text piece by piece around them.
  std::string out;
  size_t from = 0;
  for (;;) {
    const size_t nul = s.find('\0', from);
    const std::string part = s.substr(from, nul == std::string::npos ? std::string::npos : nul - from);
    if (!part.empty()) {
      utf8proc_uint8_t* r = fn(reinterpret_cast<const utf8proc_uint8_t*>(part.c_str()));
      LOOM_CHECK(r, "unicode: ", what, " of a text failed (invalid UTF-8?)");
      out += reinterpret_cast<const char*>(r);
      std::free(r);
    }
    if (nul == std::string::npos) break;
    out += '\0';
    from = nul + 1;
  }
  return out;
}
}  // namespace

std::string nfc(const std::string& s) { return mapped(to_utf8(decode(s)), utf8proc_NFC, "NFC"); }
std::string nfd(const std::string& s) { return mapped(to_utf8(decode(s)), utf8proc_NFD, "NFD"); }

}  // namespace loom::data::unicode
