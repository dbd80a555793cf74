#pragma once
// Character properties and lower-casing exactly as OpenAI's SimpleTokenizer sees them: Python's
// str.isspace / str.isdecimal / str.lower (with its Final_Sigma rule), the `regex` module's \s,
// and the classes of CLIP's pre-tokenization pattern. The data is generated from Python itself
// (see unicode_tables.hpp for the versions), so these are lookups, not reinterpretations.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <string_view>

#include "focuspatch/text/unicode_tables.hpp"

namespace focuspatch::text {

namespace detail {
inline bool in_ranges(std::span<const tables::CodeRange> ranges, char32_t c) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), c,
                             [](char32_t v, const tables::CodeRange& r) { return v < r.lo; });
  return it != ranges.begin() && c <= std::prev(it)->hi;
}
}  // namespace detail

// Which alternative of CLIP's pattern
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// (compiled with IGNORECASE) a code point can take part in, apart from the literal ones.
enum class TokenClass { letter, number, other, skip };

inline TokenClass token_class(char32_t c) {
  if (c < 0x80) {
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return TokenClass::letter;
    if (c >= '0' && c <= '9') return TokenClass::number;
    if (c == ' ' || (c >= '\t' && c <= '\r')) return TokenClass::skip;
    return TokenClass::other;
  }
  if (detail::in_ranges(tables::kLetter, c)) return TokenClass::letter;
  if (detail::in_ranges(tables::kNumber, c)) return TokenClass::number;
  if (detail::in_ranges(tables::kPatternSkip, c)) return TokenClass::skip;
  return TokenClass::other;
}

// regex's \s, which whitespace_clean collapses.
inline bool is_regex_space(char32_t c) { return detail::in_ranges(tables::kRegexSpace, c); }

// Python's str.isspace, which str.strip removes (it also covers U+001C..U+001F, unlike \s).
inline bool is_python_space(char32_t c) { return detail::in_ranges(tables::kPythonSpace, c); }

// Python's str.isdecimal: what re's \d matches in a str pattern.
inline bool is_decimal(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  return detail::in_ranges(tables::kDecimal, c);
}

// Python's str.strip() with no argument.
inline std::u32string_view python_strip(std::u32string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_python_space(s[b])) ++b;
  while (e > b && is_python_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Lower-cases one code point that is not U+03A3 and has a one code point result.
inline char32_t lower_simple(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  const std::span<const tables::LowerRun> runs(tables::kLower);
  auto it = std::upper_bound(runs.begin(), runs.end(), c,
                             [](char32_t v, const tables::LowerRun& r) { return v < r.lo; });
  if (it == runs.begin()) return c;
  const tables::LowerRun& run = *std::prev(it);
  if (c > run.hi || (c - run.lo) % run.stride != 0) return c;
  return static_cast<char32_t>(static_cast<std::int64_t>(c) + run.delta);
}

// Python's str.lower(): full lower-case mappings (U+0130 becomes two code points) and the
// Final_Sigma context for U+03A3, judged on the input string as CPython does.
inline std::u32string python_lower(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  auto ignorable = [](char32_t c) { return detail::in_ranges(tables::kCaseIgnorable, c); };
  auto cased = [](char32_t c) { return detail::in_ranges(tables::kCasedNotIgnorable, c); };
  for (std::size_t i = 0; i < n; ++i) {
    const char32_t c = s[i];
    if (c < 0x80) {
      out.push_back((c >= 'A' && c <= 'Z') ? c + 32 : c);
      continue;
    }
    if (c == 0x3A3) {
      // Final when preceded by a cased letter and not followed by one, skipping case-ignorables.
      std::size_t j = i;
      while (j > 0 && ignorable(s[j - 1])) --j;
      bool final_sigma = j > 0 && cased(s[j - 1]);
      if (final_sigma) {
        std::size_t k = i + 1;
        while (k < n && ignorable(s[k])) ++k;
        final_sigma = k == n || !cased(s[k]);
      }
      out.push_back(final_sigma ? 0x3C2 : 0x3C3);
      continue;
    }
    bool multi = false;
    for (const tables::LowerMulti& m : tables::kLowerMulti) {
      if (m.cp != c) continue;
      for (char32_t t : m.to)
        if (t != 0) out.push_back(t);
      multi = true;
    }
    if (!multi) out.push_back(lower_simple(c));
  }
  return out;
}

}  // namespace focuspatch::text
