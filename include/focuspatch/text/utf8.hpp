#pragma once
// UTF-8 <-> code points. Decoding never fails: ill-formed input is repaired the way Python's
// bytes.decode("utf-8", errors="replace") repairs it (each maximal subpart of an ill-formed
// sequence becomes one U+FFFD, as Unicode recommends), so text that OpenAI's Python code would
// have read with errors="replace" gives the same code points here.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace focuspatch::text {

inline constexpr char32_t kReplacementChar = 0xFFFD;

inline std::u32string utf8_decode(std::string_view in) {
  std::u32string out;
  out.reserve(in.size());
  const std::size_t n = in.size();
  auto at = [&](std::size_t i) { return static_cast<std::uint8_t>(in[i]); };
  std::size_t i = 0;
  while (i < n) {
    const std::uint8_t b0 = at(i);
    if (b0 < 0x80) {
      out.push_back(b0);
      ++i;
      continue;
    }
    int need = 0;             // continuation bytes after the lead
    std::uint8_t lo = 0x80;   // allowed range of the first continuation byte; the range excludes
    std::uint8_t hi = 0xBF;   // overlong forms, surrogates and code points past U+10FFFF
    char32_t c = 0;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      need = 1;
      c = b0 & 0x1Fu;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      need = 2;
      c = b0 & 0x0Fu;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      need = 3;
      c = b0 & 0x07u;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
    } else {
      out.push_back(kReplacementChar);  // stray continuation byte, C0, C1 or F5..FF
      ++i;
      continue;
    }
    std::size_t j = i + 1;
    bool ok = true;
    for (int k = 0; k < need; ++k, ++j) {
      if (j >= n) {
        ok = false;
        break;
      }
      const std::uint8_t b = at(j);
      const std::uint8_t min = k == 0 ? lo : std::uint8_t{0x80};
      const std::uint8_t max = k == 0 ? hi : std::uint8_t{0xBF};
      if (b < min || b > max) {
        ok = false;
        break;
      }
      c = (c << 6) | (b & 0x3Fu);
    }
    // On failure the bytes consumed so far (lead plus valid continuations) are one maximal
    // subpart; decoding resumes at the offending byte.
    out.push_back(ok ? c : kReplacementChar);
    i = j;
  }
  return out;
}

inline void utf8_append(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// Code points must be Unicode scalar values (everything utf8_decode produces is).
inline std::string utf8_encode(std::u32string_view in) {
  std::string out;
  out.reserve(in.size());
  for (char32_t c : in) utf8_append(out, c);
  return out;
}

// True when `in` is well-formed UTF-8 (no repair would be needed).
inline bool utf8_valid(std::string_view in) {
  const std::u32string decoded = utf8_decode(in);
  return utf8_encode(decoded) == in;
}

}  // namespace focuspatch::text
