#!/usr/bin/python3
"""Generates the data tables behind focuspatch's CLIP text clean-up and tokenizer.

Run from the project root with Debian's Python (it needs the `regex` module that CLIP itself uses)
and ftfy 6.3.1 on the path:

    PYTHONPATH=/work/ref/ftfy /usr/bin/python3 tests/reference/gen_unicode_tables.py

Writes three headers (commit them; they are part of the header-only library):

  include/focuspatch/text/unicode_tables.hpp
      - token classes of CLIP's pattern  <...>|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+  compiled with
        regex.IGNORECASE, taken by asking the `regex` module about every code point (its own
        Unicode tables, 15.0 for regex 2022.10.31, are what CLIP runs with, not unicodedata's);
      - regex's \\s (whitespace_clean) and Python's str.isspace (str.strip);
      - Python's str.lower: single code point mappings as strided runs, the multi code point ones,
        and the Cased / Case_Ignorable classes its Final_Sigma rule uses, derived by probing lower()
        itself so that they match CPython exactly;
      - str.isdecimal (Python's re \\d, used by ftfy's terminal-escape pattern);
      - canonical decompositions, combining classes and primary composites for NFC, from
        unicodedata (Unicode version printed in the header).
  include/focuspatch/text/html_entities.hpp
      - html.entities.html5 (what html.unescape knows), html's invalid character reference
        replacements and invalid code points, and ftfy's extra upper-case entity names.
  include/focuspatch/text/ftfy_tables.hpp
      - ftfy's width map, Latin ligature map, the sloppy-windows-1252 reading of C1 controls, and
        the control characters remove_control_chars drops.
"""
import html
import html.entities
import os
import sys
import unicodedata

import regex

import ftfy
import ftfy.bad_codecs  # noqa: F401  (registers sloppy-windows-1252)
from ftfy import chardata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(ROOT, "include", "focuspatch", "text")

ALL = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]


def ranges(cps):
    out = []
    for c in sorted(cps):
        if out and out[-1][1] == c - 1:
            out[-1][1] = c
        else:
            out.append([c, c])
    return out


def cp(c):
    return f"0x{c:X}"


def wrap(items, per_line, indent="    "):
    lines = []
    for i in range(0, len(items), per_line):
        lines.append(indent + ", ".join(items[i:i + per_line]) + ",")
    return "\n".join(lines)


def range_table(name, cps, comment):
    rs = ranges(cps)
    body = wrap([f"{{{cp(a)}, {cp(b)}}}" for a, b in rs], 6)
    return f"// {comment}\ninline constexpr CodeRange {name}[] = {{\n{body}\n}};\n"


def regex_unicode_version():
    """The `regex` module carries its own Unicode tables; name their version by probing letters
    that each version added."""
    letter = regex.compile(r"\p{L}")
    for version, probe in (("15.1", 0x2EBF0), ("15.0", 0x11F04), ("14.0", 0x1E290), ("13.0", 0x10FB0)):
        if letter.fullmatch(chr(probe)):
            return version
    return "older than 13.0"


def provenance():
    return (f"// Python {sys.version.split()[0]}, unicodedata {unicodedata.unidata_version}; "
            f"regex module {regex.__version__} (Unicode {regex_unicode_version()}); ftfy {ftfy.__version__}.\n")


def gen_unicode_tables():
    # ---- token classes, exactly as CLIP's compiled pattern sees single code points.
    p_letter = regex.compile(r"[\p{L}]", regex.IGNORECASE)
    p_number = regex.compile(r"[\p{N}]", regex.IGNORECASE)
    p_other = regex.compile(r"[^\s\p{L}\p{N}]", regex.IGNORECASE)
    p_space = regex.compile(r"\s")
    letter, number, skip = [], [], []
    for c in ALL:
        ch = chr(c)
        is_l = bool(p_letter.fullmatch(ch))
        is_n = bool(p_number.fullmatch(ch))
        is_o = bool(p_other.fullmatch(ch))
        assert is_l + is_n + is_o <= 1, hex(c)
        if is_l:
            letter.append(c)
        elif is_n:
            number.append(c)
        elif not is_o:
            skip.append(c)  # whitespace, and U+0345 which IGNORECASE puts in no alternative
    # Which code points the pattern's literal letters match under IGNORECASE (simple folding).
    fold_extra = {}
    for lit in sorted(set("startoftextendoftextsrevmld")):
        for c in ALL:
            if chr(c) not in (lit, lit.upper()) and regex.fullmatch(regex.escape(lit), chr(c), regex.I):
                fold_extra[c] = lit
    assert fold_extra == {0x17F: "s"}, fold_extra  # the code below assumes only LONG S

    regex_space = [c for c in ALL if p_space.fullmatch(chr(c))]
    py_space = [c for c in ALL if chr(c).isspace()]
    decimal = [c for c in ALL if chr(c).isdecimal()]

    # ---- str.lower
    single = []
    multi = []
    for c in ALL:
        low = chr(c).lower()
        if low == chr(c) or c == 0x3A3:  # capital sigma is context dependent, handled in code
            continue
        if len(low) == 1:
            single.append((c, ord(low) - c))
        else:
            multi.append((c, [ord(x) for x in low]))
    runs = []  # (first, last, stride, delta)
    for c, d in single:
        if runs:
            first, last, stride, delta = runs[-1]
            if delta == d and (c - last == stride or (first == last and c - last in (1, 2))):
                runs[-1] = (first, c, c - last, delta)
                continue
        runs.append((c, c, 1, d))
    # Final_Sigma needs Cased and Case_Ignorable as CPython defines them; probe lower() for them.
    def sigma_final_after(c):
        return (chr(c) + "\u03a3").lower()[-1] == "\u03c2"

    def sigma_final_after_a(c):
        return ("A" + chr(c) + "\u03a3").lower()[-1] == "\u03c2"

    cased_stop = [c for c in ALL if sigma_final_after(c)]
    ignorable = [c for c in ALL if sigma_final_after_a(c) and not sigma_final_after(c)]

    # ---- NFC
    ccc = {c: unicodedata.combining(chr(c)) for c in ALL if unicodedata.combining(chr(c))}
    decomp = {}
    for c in ALL:
        d = unicodedata.decomposition(chr(c))
        if d and not d.startswith("<"):
            parts = [int(x, 16) for x in d.split()]
            assert 1 <= len(parts) <= 2
            decomp[c] = parts
    compose = []
    for c, parts in decomp.items():
        if len(parts) == 2 and unicodedata.normalize("NFC", chr(c)) == chr(c):
            compose.append((parts[0], parts[1], c))
    compose.sort()
    # nfc() leaves text below U+0300 alone; that is only right while these hold.
    assert all(second >= 0x300 for _, second, _ in compose)
    assert all(unicodedata.normalize("NFC", chr(c)) == chr(c) for c in range(0x300))
    assert all(unicodedata.combining(chr(c)) == 0 for c in range(0x300))
    ccc_runs = []
    for c in sorted(ccc):
        if ccc_runs and ccc_runs[-1][1] == c - 1 and ccc_runs[-1][2] == ccc[c]:
            ccc_runs[-1][1] = c
        else:
            ccc_runs.append([c, c, ccc[c]])

    out = []
    out.append("#pragma once\n")
    out.append("// GENERATED by tests/reference/gen_unicode_tables.py -- do not edit by hand.\n")
    out.append(provenance())
    out.append(
        f"// Token classes come from the `regex` module (its own Unicode {regex_unicode_version()} tables: this is\n"
        "// what OpenAI's SimpleTokenizer runs with); lower(), isspace(), isdecimal() and the NFC data come\n"
        f"// from Python's unicodedata, Unicode {unicodedata.unidata_version}. Code points outside these\n"
        "// versions' assignments are classified as those versions say (usually: 'other').\n")
    out.append("#include <cstdint>\n\nnamespace focuspatch::text::tables {\n\n")
    out.append(f"inline constexpr const char* kUnicodeVersion = \"{unicodedata.unidata_version}\";\n\n")
    out.append("struct CodeRange {\n  char32_t lo, hi;\n};\n")
    out.append("struct LowerRun {  // lo, lo+stride, ... hi map to c + delta\n"
               "  char32_t lo, hi;\n  std::uint8_t stride;\n  std::int32_t delta;\n};\n")
    out.append("struct LowerMulti {\n  char32_t cp;\n  char32_t to[3];\n};\n")
    out.append("struct CombiningRun {\n  char32_t lo, hi;\n  std::uint8_t ccc;\n};\n")
    out.append("struct Decomposition {\n  char32_t cp, first, second;  // second == 0: singleton\n};\n")
    out.append("struct Composition {\n  char32_t first, second, composed;\n};\n\n")
    out.append(range_table("kLetter", letter,
                           "[\\p{L}] under IGNORECASE: the pattern's letter runs."))
    out.append(range_table("kNumber", number, "[\\p{N}] under IGNORECASE: single-digit tokens."))
    out.append(range_table("kPatternSkip", skip,
                           "Matched by no alternative of the pattern: \\s, and U+0345 (IGNORECASE folds it\n"
                           "// to iota, so it leaves [^\\s\\p{L}\\p{N}] without joining [\\p{L}])."))
    out.append(range_table("kRegexSpace", regex_space, "regex's \\s (whitespace_clean)."))
    out.append(range_table("kPythonSpace", py_space, "Python's str.isspace (str.strip)."))
    out.append(range_table("kDecimal", decimal, "Python's str.isdecimal (re's \\d)."))
    out.append(range_table("kCasedNotIgnorable", cased_stop,
                           "Cased and not Case_Ignorable, as CPython's Final_Sigma rule sees them."))
    out.append(range_table("kCaseIgnorable", ignorable,
                           "Case_Ignorable, as CPython's Final_Sigma rule sees it."))
    body = wrap([f"{{{cp(a)}, {cp(b)}, {s}, {d}}}" for a, b, s, d in runs], 4)
    out.append(f"// str.lower for single code points (capital sigma excepted).\n"
               f"inline constexpr LowerRun kLower[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cp(c)}, {{{', '.join(cp(x) for x in t)}}}}}" for c, t in multi], 2)
    out.append(f"// str.lower results longer than one code point.\n"
               f"inline constexpr LowerMulti kLowerMulti[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cp(a)}, {cp(b)}, {k}}}" for a, b, k in ccc_runs], 5)
    out.append(f"// Canonical combining classes (non-zero only).\n"
               f"inline constexpr CombiningRun kCombining[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cp(c)}, {cp(p[0])}, {cp(p[1]) if len(p) > 1 else '0'}}}"
                 for c, p in sorted(decomp.items())], 4)
    out.append(f"// Canonical decompositions, one level (apply recursively); Hangul is algorithmic.\n"
               f"inline constexpr Decomposition kDecomposition[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cp(a)}, {cp(b)}, {cp(c)}}}" for a, b, c in compose], 4)
    out.append(f"// Primary composites, sorted by (first, second); Hangul is algorithmic.\n"
               f"inline constexpr Composition kComposition[] = {{\n{body}\n}};\n")
    out.append("\n}  // namespace focuspatch::text::tables\n")
    return "".join(out)


def cpp_string(s):
    """An ASCII-only C++ literal; non-ASCII never occurs in entity names."""
    assert all(0x20 <= ord(ch) < 0x7F and ch not in '"\\' for ch in s), s
    return '"' + s + '"'


def cps_init(value, n):
    cps = [ord(x) for x in value]
    assert 1 <= len(cps) <= n, value
    return "{" + ", ".join(cp(x) for x in cps) + "}"  # aggregate initialisation pads with 0


def gen_html_entities():
    html5 = sorted(html.entities.html5.items(), key=lambda kv: kv[0].encode())
    extras = []
    for key, value in chardata.HTML_ENTITIES.items():
        name = key[1:]  # without '&'
        if name in html.entities.html5:
            assert html.entities.html5[name] == value
        else:
            extras.append((name, value))
    extras.sort(key=lambda kv: kv[0].encode())
    invalid_refs = sorted(html._invalid_charrefs.items())
    invalid_cps = ranges(html._invalid_codepoints)

    out = []
    out.append("#pragma once\n")
    out.append("// GENERATED by tests/reference/gen_unicode_tables.py -- do not edit by hand.\n")
    out.append(provenance())
    out.append("// The HTML5 named character references that Python's html.unescape knows (names with and\n"
               "// without the trailing ';', byte-sorted), the replacements it makes for invalid numeric\n"
               "// references, and the upper-case names ftfy's unescape_html accepts besides html5's.\n")
    out.append("#include <string_view>\n\n#include \"focuspatch/text/unicode_tables.hpp\"\n\n"
               "namespace focuspatch::text::tables {\n\n")
    out.append("struct NamedEntity {\n  std::string_view name;\n  char32_t value[3];  // 0-padded\n};\n"
               "struct CharRefFix {\n  char32_t number, value;\n};\n\n")
    body = wrap([f"{{{cpp_string(n)}, {cps_init(v, 3)}}}" for n, v in html5], 3)
    out.append(f"inline constexpr NamedEntity kHtml5Entities[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cpp_string(n)}, {cps_init(v, 3)}}}" for n, v in extras], 3)
    out.append("// ftfy: '&' NAME ';' for all-lower-case html5 names whose upper-cased form is not itself an\n"
               "// entity; the value is the upper-cased character(s).\n"
               f"inline constexpr NamedEntity kFtfyUpperEntities[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cp(a)}, {cp(ord(b))}}}" for a, b in invalid_refs], 4)
    out.append(f"// html._invalid_charrefs: numeric references replaced by another character.\n"
               f"inline constexpr CharRefFix kInvalidCharRefs[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cp(a)}, {cp(b)}}}" for a, b in invalid_cps], 6)
    out.append(f"// html._invalid_codepoints: numeric references that decode to nothing.\n"
               f"inline constexpr CodeRange kInvalidCodePoints[] = {{\n{body}\n}};\n")
    out.append("\n}  // namespace focuspatch::text::tables\n")
    return "".join(out)


def gen_ftfy_tables():
    width = sorted(chardata.WIDTH_MAP.items())
    ligatures = sorted(chardata.LIGATURES.items())
    c1 = [(c, bytes([c]).decode("sloppy-windows-1252")) for c in range(0x80, 0xA0)]
    control = ranges(chardata.CONTROL_CHARS.keys())
    out = []
    out.append("#pragma once\n")
    out.append("// GENERATED by tests/reference/gen_unicode_tables.py -- do not edit by hand.\n")
    out.append(provenance())
    out.append("// ftfy's character maps: fix_character_width, fix_latin_ligatures, fix_c1_controls and\n"
               "// remove_control_chars.\n")
    out.append("#include \"focuspatch/text/unicode_tables.hpp\"\n\n"
               "namespace focuspatch::text::tables {\n\n")
    out.append("struct CharMap {\n  char32_t cp;\n  char32_t to[3];  // 0-padded\n};\n\n")
    body = wrap([f"{{{cp(c)}, {cps_init(v, 3)}}}" for c, v in width], 3)
    out.append(f"// WIDTH_MAP: U+3000 and the NFKC forms of U+FF01..U+FFEF.\n"
               f"inline constexpr CharMap kFtfyWidth[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cp(c)}, {cps_init(v, 3)}}}" for c, v in ligatures], 3)
    out.append(f"// LIGATURES.\ninline constexpr CharMap kFtfyLigatures[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cp(c)}, {cps_init(v, 3)}}}" for c, v in c1], 3)
    out.append(f"// U+0080..U+009F read as sloppy-windows-1252 bytes.\n"
               f"inline constexpr CharMap kFtfyC1[] = {{\n{body}\n}};\n")
    body = wrap([f"{{{cp(a)}, {cp(b)}}}" for a, b in control], 6)
    out.append(f"// CONTROL_CHARS: removed by remove_control_chars.\n"
               f"inline constexpr CodeRange kFtfyControl[] = {{\n{body}\n}};\n")
    out.append("\n}  // namespace focuspatch::text::tables\n")
    return "".join(out)


def main():
    assert ftfy.__version__ == "6.3.1", ftfy.__version__
    files = {
        "unicode_tables.hpp": gen_unicode_tables(),
        "html_entities.hpp": gen_html_entities(),
        "ftfy_tables.hpp": gen_ftfy_tables(),
    }
    for name, text in files.items():
        path = os.path.join(OUT_DIR, name)
        with open(path, "w", encoding="ascii") as f:
            f.write(text)
        print(f"wrote {path} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
