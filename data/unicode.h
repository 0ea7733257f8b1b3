// The Unicode pieces the Hugging Face tokenizers need (data/wordpiece.h, data/clip_bpe.h), over utf8proc:
// UTF-8 to code points and back, the character properties their normalisers and pre-tokenisers test,
// NFC/NFD and lowercasing.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace loom::data::unicode {

using CodePoint = int32_t;

// Invalid bytes become U+FFFD, one per byte.
std::vector<CodePoint> decode(const std::string& utf8);
void append(std::string& out, CodePoint c);
std::string to_utf8(const std::vector<CodePoint>& cps);

bool is_whitespace(CodePoint c);   // the White_Space property (Rust's char::is_whitespace, regex \s)
bool is_letter(CodePoint c);       // \p{L}
bool is_number(CodePoint c);       // \p{N}
bool is_punctuation(CodePoint c);  // \p{P}
bool is_other(CodePoint c);        // \p{C}: Cc, Cf, Cn, Co, Cs
bool is_nonspacing_mark(CodePoint c);  // Mn
CodePoint to_lower(CodePoint c);   // simple (one-to-one) lowercase mapping

std::string nfc(const std::string& utf8);
std::string nfd(const std::string& utf8);

}  // namespace loom::data::unicode
