#pragma once
// Python's html.unescape, which CLIP's basic_clean applies twice after ftfy. Emulated in full:
// every HTML5 named reference (html.entities.html5, with and without ';'), the longest-prefix rule
// for legacy names written without ';' ("&ampx" -> "&x"), decimal and hex references including
// the HTML5 replacements for invalid ones (&#128; -> U+20AC, &#0; -> U+FFFD, surrogates and
// numbers past U+10FFFF -> U+FFFD, noncharacters and most controls -> nothing).
// One knowing difference: Python refuses to convert decimal references of more than 4300 digits
// (int() raises ValueError, so the whole encode fails); here they read as too large -> U+FFFD.
#include <algorithm>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "focuspatch/text/html_entities.hpp"
#include "focuspatch/text/unicode.hpp"

namespace focuspatch::text {

namespace detail {

// The entity in `table` named exactly `name` (ASCII code points), if any.
inline const tables::NamedEntity* find_entity(std::span<const tables::NamedEntity> table,
                                              std::u32string_view name) {
  if (name.empty() || name.size() > 64) return nullptr;
  std::string ascii;
  ascii.reserve(name.size());
  for (char32_t c : name) {
    if (c >= 0x80) return nullptr;  // every entity name is ASCII
    ascii.push_back(static_cast<char>(c));
  }
  auto it = std::lower_bound(table.begin(), table.end(), std::string_view(ascii),
                             [](const tables::NamedEntity& e, std::string_view v) { return e.name < v; });
  if (it == table.end() || it->name != ascii) return nullptr;
  return &*it;
}

inline void append_entity(std::u32string& out, const tables::NamedEntity& e) {
  for (char32_t c : e.value)
    if (c != 0) out.push_back(c);
}

inline bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }
inline bool is_ascii_hex(char32_t c) { return is_ascii_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
inline bool is_ascii_alnum(char32_t c) { return is_ascii_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z'); }
inline unsigned hex_value(char32_t c) {
  return is_ascii_digit(c) ? unsigned(c - '0') : unsigned((c | 0x20) - 'a' + 10);
}

// What html.unescape makes of the numeric reference `number`; values past U+10FFFF arrive
// saturated at 0x110000.
inline void append_char_ref(std::u32string& out, std::uint32_t number) {
  for (const tables::CharRefFix& fix : tables::kInvalidCharRefs) {
    if (fix.number == number) {
      out.push_back(fix.value);
      return;
    }
  }
  if ((number >= 0xD800 && number <= 0xDFFF) || number > 0x10FFFF) {
    out.push_back(0xFFFD);
    return;
  }
  if (in_ranges(tables::kInvalidCodePoints, static_cast<char32_t>(number))) return;
  out.push_back(static_cast<char32_t>(number));
}

// Parses a numeric reference body starting right after "&#" at s[i]. Returns the end (past an
// optional ';') and the saturated number, or nothing when no digits follow, as Python's
// pattern  #[0-9]+;?|#[xX][0-9a-fA-F]+;?  would.
struct CharRef {
  std::size_t end;
  std::uint32_t number;
};
inline std::optional<CharRef> parse_char_ref(std::u32string_view s, std::size_t i) {
  bool hex = false;
  std::size_t j = i;
  if (j < s.size() && is_ascii_digit(s[j])) {
    hex = false;
  } else if (j + 1 < s.size() && (s[j] == 'x' || s[j] == 'X') && is_ascii_hex(s[j + 1])) {
    hex = true;
    ++j;
  } else {
    return std::nullopt;
  }
  std::uint32_t number = 0;
  while (j < s.size() && (hex ? is_ascii_hex(s[j]) : is_ascii_digit(s[j]))) {
    const std::uint32_t digit = hex ? hex_value(s[j]) : unsigned(s[j] - '0');
    number = std::min<std::uint32_t>(number * (hex ? 16u : 10u) + digit, 0x110000u);
    ++j;
  }
  if (j < s.size() && s[j] == ';') ++j;
  return CharRef{j, number};
}

}  // namespace detail

inline std::u32string html_unescape(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    if (s[i] != '&') {
      out.push_back(s[i++]);
      continue;
    }
    if (i + 1 < n && s[i + 1] == '#') {
      if (auto ref = detail::parse_char_ref(s, i + 2)) {
        detail::append_char_ref(out, ref->number);
        i = ref->end;
        continue;
      }
      out.push_back(s[i++]);  // "&#" without digits is left as it is
      continue;
    }
    // A name: up to 32 characters outside "\t\n\f <&#;", then an optional ';'.
    std::size_t j = i + 1;
    auto name_char = [](char32_t c) {
      return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' && c != ';';
    };
    while (j < n && j - (i + 1) < 32 && name_char(s[j])) ++j;
    if (j == i + 1) {
      out.push_back(s[i++]);
      continue;
    }
    if (j < n && s[j] == ';') ++j;
    const std::u32string_view name = s.substr(i + 1, j - (i + 1));
    if (const auto* e = detail::find_entity(tables::kHtml5Entities, name)) {
      detail::append_entity(out, *e);
    } else {
      // The longest legacy name (those valid without ';') that starts the text.
      bool found = false;
      for (std::size_t len = name.size() - 1; len >= 2; --len) {
        if (const auto* p = detail::find_entity(tables::kHtml5Entities, name.substr(0, len))) {
          detail::append_entity(out, *p);
          out.append(name.substr(len));
          found = true;
          break;
        }
      }
      if (!found) {
        out.push_back('&');
        out.append(name);
      }
    }
    i = j;
  }
  return out;
}

}  // namespace focuspatch::text
