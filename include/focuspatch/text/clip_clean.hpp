#pragma once
// The text clean-up of OpenAI's SimpleTokenizer.encode, before pre-tokenization:
//   whitespace_clean(basic_clean(text)).lower()
// where basic_clean = ftfy.fix_text, html.unescape twice, strip(), and whitespace_clean collapses
// every run of regex \s into one space and strips again. See ftfy.hpp for which parts of ftfy are
// emulated.
#include <string>
#include <string_view>

#include "focuspatch/text/ftfy.hpp"
#include "focuspatch/text/html_unescape.hpp"
#include "focuspatch/text/unicode.hpp"

namespace focuspatch::text {

inline std::u32string clip_clean(std::u32string_view text) {
  const std::u32string fixed = html_unescape(html_unescape(ftfy_fix_text(text)));
  const std::u32string_view stripped = python_strip(fixed);
  std::u32string collapsed;
  collapsed.reserve(stripped.size());
  bool in_run = false;
  for (char32_t c : stripped) {
    const bool space = is_regex_space(c);
    if (!space)
      collapsed.push_back(c);
    else if (!in_run)
      collapsed.push_back(' ');
    in_run = space;
  }
  return python_lower(python_strip(collapsed));
}

}  // namespace focuspatch::text
