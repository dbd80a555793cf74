#pragma once
// The part of ftfy.fix_text (ftfy 6.3.1, default TextFixerConfig) that CLIP prompts can meet.
//
// Emulated exactly, in ftfy's order, per line segment and repeated until a pass changes nothing:
//   - unescape_html ("auto"): HTML5 references ending in ';' (named, decimal, hex), plus ftfy's
//     upper-case names (&EACUTE; -> É, &SZLIG; -> SS), but not when the segment contains '<'; as
//     in ftfy, once a line has a '<', unescaping stays off for all later lines too;
//   - fix_c1_controls: U+0080..U+009F read as windows-1252 (U+0093 -> “, later uncurled);
//   - fix_latin_ligatures (ﬁ ﬂ ﬀ ﬃ ﬄ ﬅ ﬆ Ĳ ĳ Ǳ ǲ ǳ Ǆ ǅ ǆ Ǉ ǈ ǉ Ǌ ǋ ǌ ŉ);
//   - fix_character_width: fullwidth ASCII, halfwidth katakana/hangul and U+3000 to normal width;
//   - uncurl_quotes: U+02BC, U+2018..U+201B -> ', U+201C..U+201F -> ";
//   - fix_line_breaks: \r\n, \r, U+2028, U+2029, U+0085 -> \n;
//   - remove_terminal_escapes: ESC [ digits/';' letter;
//   - remove_control_chars: U+0000..U+0008, U+000B, U+000E..U+001F, U+007F, U+206A..U+206F,
//     U+FEFF, U+FFF9..U+FFFC;
//   - NFC normalization.
// fix_surrogates has nothing to do: our text comes from UTF-8 decoding, which never yields
// surrogates (ill-formed bytes are already U+FFFD).
//
// NOT emulated: fix_encoding, i.e. mojibake repair ("cafÃ©" -> "café", "â€œ" -> “) and its helpers
// restore_byte_a0, replace_lossy_sequences and decode_inconsistent_utf8. ftfy only runs it when
// its "badness" heuristic flags the text, which is built not to fire on ordinary writing (it
// changes none of the ~500 test strings in many scripts, deliberate mojibake aside). Text that does
// look like mojibake is tokenized as written here, while CLIP would first repair it.
// Also: a segment is re-fixed at most kMaxPasses times (ftfy loops until nothing changes; only
// entities nested that deep, like "&amp;amp;amp;...", need more), which bounds the work on
// hostile input.
#include <algorithm>
#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "focuspatch/text/ftfy_tables.hpp"
#include "focuspatch/text/html_unescape.hpp"
#include "focuspatch/text/nfc.hpp"
#include "focuspatch/text/unicode.hpp"

namespace focuspatch::text {

namespace detail {

inline const tables::CharMap* find_char_map(std::span<const tables::CharMap> table, char32_t c) {
  auto it = std::lower_bound(table.begin(), table.end(), c,
                             [](const tables::CharMap& m, char32_t v) { return m.cp < v; });
  return (it != table.end() && it->cp == c) ? &*it : nullptr;
}

// str.translate with a table of code point -> up to three code points.
inline std::u32string translate(std::u32string_view s, std::span<const tables::CharMap> table, char32_t lo,
                                char32_t hi) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    const tables::CharMap* m = (c >= lo && c <= hi) ? find_char_map(table, c) : nullptr;
    if (!m) {
      out.push_back(c);
      continue;
    }
    for (char32_t t : m->to)
      if (t != 0) out.push_back(t);
  }
  return out;
}

// ftfy's unescape_html: matches  &#?[0-9A-Za-z]{1,24};  and replaces known names; numeric ones go
// through html.unescape and are kept as written when that leaves a ';' behind (as in "&#59;").
inline std::u32string ftfy_unescape_html(std::u32string_view s) {
  if (s.find(U'&') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  out.reserve(s.size());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    if (s[i] != '&') {
      out.push_back(s[i++]);
      continue;
    }
    const bool hash = i + 1 < n && s[i + 1] == '#';
    const std::size_t start = i + (hash ? 2 : 1);
    std::size_t j = start;
    while (j < n && is_ascii_alnum(s[j])) ++j;
    if (j == start || j - start > 24 || j >= n || s[j] != ';') {
      out.push_back(s[i++]);
      continue;
    }
    const std::u32string_view match = s.substr(i, j + 1 - i);
    if (hash) {
      const std::u32string un = html_unescape(match);
      if (un.find(U';') != std::u32string::npos)
        out.append(match);
      else
        out.append(un);
    } else {
      const std::u32string_view name = match.substr(1);  // with its ';'
      const tables::NamedEntity* e = find_entity(tables::kHtml5Entities, name);
      if (!e) e = find_entity(tables::kFtfyUpperEntities, name);
      if (e)
        append_entity(out, *e);
      else
        out.append(match);
    }
    i = j + 1;
  }
  return out;
}

inline std::u32string uncurl_quotes(std::u32string_view s) {
  std::u32string out(s);
  for (char32_t& c : out) {
    if (c == 0x2BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';
    else if (c >= 0x201C && c <= 0x201F) c = '"';
  }
  return out;
}

inline std::u32string fix_line_breaks(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') continue;  // the \n follows
    out.push_back((c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85) ? U'\n' : c);
  }
  return out;
}

// ESC '[' (digits or ';')* letter, with Python re's Unicode \d.
inline std::u32string remove_terminal_escapes(std::u32string_view s) {
  if (s.find(U'\x1b') == std::u32string_view::npos) return std::u32string(s);
  std::u32string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    if (s[i] == 0x1B && i + 1 < s.size() && s[i + 1] == '[') {
      std::size_t j = i + 2;
      while (j < s.size() && (s[j] == ';' || is_decimal(s[j]))) ++j;
      if (j < s.size() && s[j] < 0x80 && ((s[j] | 0x20) >= 'a' && (s[j] | 0x20) <= 'z')) {
        i = j + 1;
        continue;
      }
    }
    out.push_back(s[i++]);
  }
  return out;
}

inline std::u32string remove_control_chars(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s)
    if (!in_ranges(tables::kFtfyControl, c)) out.push_back(c);
  return out;
}

inline constexpr int kMaxPasses = 256;

inline std::u32string fix_segment(std::u32string text, bool unescape) {
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    std::u32string t = unescape ? ftfy_unescape_html(text) : text;
    t = translate(t, tables::kFtfyC1, 0x80, 0x9F);
    t = translate(t, tables::kFtfyLigatures, 0x132, 0xFB06);
    t = translate(t, tables::kFtfyWidth, 0x3000, 0xFFEF);
    t = uncurl_quotes(t);
    t = fix_line_breaks(t);
    t = remove_terminal_escapes(t);
    t = remove_control_chars(t);
    t = nfc(t);
    if (t == text) break;
    text = std::move(t);
  }
  return text;
}

}  // namespace detail

// ftfy.fix_text(text) with the emulated steps above.
inline std::u32string ftfy_fix_text(std::u32string_view text) {
  constexpr std::size_t kMaxDecodeLength = 1000000;  // ftfy's max_decode_length, in code points
  std::u32string out;
  out.reserve(text.size());
  bool unescape = true;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t newline = text.find(U'\n', pos);
    std::size_t end = newline == std::u32string_view::npos ? text.size() : newline + 1;
    if (end - pos > kMaxDecodeLength) end = pos + kMaxDecodeLength;
    const std::u32string_view segment = text.substr(pos, end - pos);
    if (unescape && segment.find(U'<') != std::u32string_view::npos) unescape = false;
    out += detail::fix_segment(std::u32string(segment), unescape);
    pos = end;
  }
  return out;
}

}  // namespace focuspatch::text
