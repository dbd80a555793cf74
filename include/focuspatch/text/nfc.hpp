#pragma once
// Unicode Normalization Form C (UAX #15), the last step of every ftfy.fix_text pass: canonical
// decomposition, canonical ordering of combining marks, then canonical composition. The tables
// come from Python's unicodedata (unicode_tables.hpp), so this agrees with
// unicodedata.normalize("NFC", ...) of the Python that generated them.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "focuspatch/text/unicode_tables.hpp"

namespace focuspatch::text {

namespace detail {

// Hangul syllables are composed and decomposed arithmetically rather than from tables.
inline constexpr char32_t kHangulS = 0xAC00, kHangulL = 0x1100, kHangulV = 0x1161, kHangulT = 0x11A7;
inline constexpr char32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
inline constexpr char32_t kHangulNCount = kHangulVCount * kHangulTCount;
inline constexpr char32_t kHangulSCount = kHangulLCount * kHangulNCount;

inline std::uint8_t combining_class(char32_t c) {
  if (c < 0x300) return 0;
  const std::span<const tables::CombiningRun> runs(tables::kCombining);
  auto it = std::upper_bound(runs.begin(), runs.end(), c,
                             [](char32_t v, const tables::CombiningRun& r) { return v < r.lo; });
  if (it == runs.begin()) return 0;
  --it;
  return c <= it->hi ? it->ccc : 0;
}

inline void decompose_into(std::u32string& out, char32_t c) {
  if (c >= kHangulS && c < kHangulS + kHangulSCount) {
    const char32_t s = c - kHangulS;
    out.push_back(kHangulL + s / kHangulNCount);
    out.push_back(kHangulV + (s % kHangulNCount) / kHangulTCount);
    if (s % kHangulTCount != 0) out.push_back(kHangulT + s % kHangulTCount);
    return;
  }
  const std::span<const tables::Decomposition> table(tables::kDecomposition);
  auto it = std::lower_bound(table.begin(), table.end(), c,
                             [](const tables::Decomposition& d, char32_t v) { return d.cp < v; });
  if (it == table.end() || it->cp != c) {
    out.push_back(c);
    return;
  }
  decompose_into(out, it->first);  // depth is bounded by the data (at most 4 levels)
  if (it->second != 0) decompose_into(out, it->second);
}

// The primary composite of (first, second), or 0 when they do not compose.
inline char32_t compose_pair(char32_t first, char32_t second) {
  if (first >= kHangulL && first < kHangulL + kHangulLCount && second >= kHangulV &&
      second < kHangulV + kHangulVCount)
    return kHangulS + ((first - kHangulL) * kHangulVCount + (second - kHangulV)) * kHangulTCount;
  if (first >= kHangulS && first < kHangulS + kHangulSCount && (first - kHangulS) % kHangulTCount == 0 &&
      second > kHangulT && second < kHangulT + kHangulTCount)
    return first + (second - kHangulT);
  const std::span<const tables::Composition> table(tables::kComposition);
  auto it = std::lower_bound(table.begin(), table.end(), std::pair{first, second},
                             [](const tables::Composition& e, const std::pair<char32_t, char32_t>& v) {
                               return e.first != v.first ? e.first < v.first : e.second < v.second;
                             });
  if (it == table.end() || it->first != first || it->second != second) return 0;
  return it->composed;
}

}  // namespace detail

inline std::u32string nfc(std::u32string_view in) {
  // Below U+0300 nothing decomposes to something different, combines, or reorders (the table
  // generator asserts this), which covers ASCII and Latin-1 prompts.
  if (std::all_of(in.begin(), in.end(), [](char32_t c) { return c < 0x300; })) return std::u32string(in);

  std::u32string buf;
  buf.reserve(in.size() + 8);
  for (char32_t c : in) detail::decompose_into(buf, c);

  // Canonical ordering: stable-sort each run of non-starters by combining class.
  std::vector<std::uint8_t> ccc(buf.size());
  for (std::size_t i = 0; i < buf.size(); ++i) ccc[i] = detail::combining_class(buf[i]);
  for (std::size_t i = 0; i < buf.size();) {
    if (ccc[i] == 0) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < buf.size() && ccc[j] != 0) ++j;
    // Insertion sort: runs are short, and it is stable.
    for (std::size_t a = i + 1; a < j; ++a) {
      for (std::size_t b = a; b > i && ccc[b - 1] > ccc[b]; --b) {
        std::swap(ccc[b - 1], ccc[b]);
        std::swap(buf[b - 1], buf[b]);
      }
    }
    i = j;
  }

  // Canonical composition: each character composes with the last starter unless a character of
  // the same or higher class, or a starter, stands between them.
  if (buf.empty()) return buf;
  std::size_t starter = 0;
  int last_class = ccc[0] == 0 ? 0 : 256;  // a leading non-starter has no starter to join
  std::size_t out = 1;
  for (std::size_t i = 1; i < buf.size(); ++i) {
    const char32_t c = buf[i];
    const int cls = ccc[i];
    // last_class == 0 means the starter is the previous kept character (starters reset it).
    if (last_class < cls || last_class == 0) {
      const char32_t composed = detail::compose_pair(buf[starter], c);
      if (composed != 0) {
        buf[starter] = composed;
        continue;
      }
    }
    if (cls == 0) starter = out;
    last_class = cls;
    buf[out++] = c;
  }
  buf.resize(out);
  return buf;
}

}  // namespace focuspatch::text
