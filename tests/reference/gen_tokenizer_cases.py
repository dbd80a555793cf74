#!/usr/bin/python3
"""Generates the tokenizer fixtures for tests/test_tokenizer.cpp from OpenAI's own tokenizer.

Run from the project root with Debian's Python (CLIP's tokenizer needs the `regex` module), with
OpenAI CLIP's source and ftfy 6.3.1 beside the project:

    PYTHONPATH=/work/ref/ftfy /usr/bin/python3 tests/reference/gen_tokenizer_cases.py \\
        [--clip /work/ref/CLIP] [--vocab /work/shared/clip/bpe_simple_vocab_16e6.txt.gz]

Writes into tests/fixtures/tokenizer/:
  - cases.tsv: one case per line: the hex of the input's bytes, a TAB, the ids of
    SimpleTokenizer.encode (space separated, empty for none). Inputs that are not valid UTF-8 are
    first decoded with bytes.decode("utf-8", errors="replace"), the behaviour focuspatch defines
    for such bytes.
  - decode.tsv: one case per line: ids (space separated), a TAB, the hex of the UTF-8 encoding of
    SimpleTokenizer.decode(ids). Includes random id sequences whose bytes are not valid UTF-8.
  - nfc.tsv: hex of UTF-8 input, TAB, hex of unicodedata.normalize("NFC", input): random runs of
    bases, combining marks of mixed classes, Hangul jamo and syllables, excluded composites.
  - unicode_digests.txt: CRC-32s over every code point of Python's str.lower, NFC of single code
    points, isspace / isdecimal, regex's \s, and the class CLIP's pattern gives each code point,
    so the C++ lookups are checked exhaustively against Python at the cost of a few bytes.

Cases whose result depends on ftfy's mojibake repair (fix_encoding), which focuspatch does not
emulate, are left out: a case is kept only when ftfy.fix_text(s) == ftfy.fix_text(s,
fix_encoding=False). The ones this drops are listed in EXPECTED_EXCLUSIONS below; the script
fails if that list goes stale, so it stays an honest record.
"""
import argparse
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer")

# Inputs (as bytes) that real ftfy changes through fix_encoding, so focuspatch's output differs.
EXPECTED_EXCLUSIONS = {
    # Classic UTF-8-read-as-windows-1252 mojibake; ftfy repairs it to "café", "“quoted”", "…".
    "cafÃ©".encode(): "mojibake repair: Ã© -> é",
    "â€œquotedâ€\x9d".encode(): "mojibake repair: â€œ -> “",
    "wait, thatâ€™s it".encode(): "mojibake repair: â€™ -> ’ -> '",
    "Ã¼ber Ã¤rger".encode(): "mojibake repair: Ã¼ -> ü",
    "ÐŸÑ€Ð¸Ð²ÐµÑ‚".encode(): "mojibake repair: Cyrillic read as windows-1252",
}

OBJECTS = [
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal nut", "pill", "screw",
    "tile", "toothbrush", "transistor", "wood", "zipper", "candle", "capsules", "cashew", "chewinggum",
    "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
]
STATES = [
    "flawless", "perfect", "unblemished", "damaged", "broken", "scratched", "cracked", "bent",
    "contaminated", "faulty", "with a hole", "with a missing part", "with a crack", "without defect",
]
TEMPLATES = [
    "a photo of a {state} {obj}.", "a cropped photo of the {state} {obj}.", "A close-up photo of a {state} {obj}",
    "a bright photo of a {state} {obj}", "a dark photo of the {state} {obj}.", "a jpeg corrupted photo of a {state} {obj}.",
    "a blurry photo of the {state} {obj}.", "a photo of a small {state} {obj}.", "This is a {state} {obj} in the scene.",
    "there is a {state} {obj} in the photo.", "a low resolution photo of a {state} {obj}.", "{obj}",
]

HANDWRITTEN = [
    "", " ", "\n", "\t \n\r ", "a", "A", "ab", "hello world", "Hello, World!", "  leading spaces", "trailing spaces   ",
    "multiple   inner    spaces", "tabs\tbetween\twords", "new\nlines\n\nand\n\n\nmore", "windows\r\nline\r\nendings",
    "old mac\rline\rendings", "mixed \t\n\r\x0b\x0c whitespace", "no-break\u00a0space", "em\u2003space and\u2009thin",
    "ideographic\u3000space", "zero\u200bwidth\u200cjoiners\u200d", "line\u2028separator\u2029paragraph",
    "next\u0085line", "file\x1csep\x1dgroup\x1erecord\x1funit", "bell\x07and\x08backspace\x00nul", "del\x7fete",
    "bom\ufefffirst", "\ufeffbom at start", "object\ufffcreplacement", "annot\ufff9ation\ufffb",
    "arabic\u206acontrols\u206f", "rtl\u200fmark\u202eoverride", "soft\u00adhyphen",
    # contractions, in both cases and odd places
    "it's", "don't", "they're", "we've", "I'm", "you'll", "he'd", "IT'S", "DON'T", "THEY'RE", "WE'VE", "I'M",
    "YOU'LL", "HE'D", "It'S", "'s", "''s", "'sss", "o'clock", "rock'n'roll", "'re'", "'ll've", "x'y", "'D", "'LL",
    "'ſ", "'ſt", "there's 'm 't", "can't won't shan't", "'", "''", "'''", "' s", "it’s curly", "it‘s", "itʼs",
    "it‛s", "‟quoted‟", "“double” and ‘single’ quotes", "„German“ «French» ‹single›",
    # digits and punctuation
    "0", "7", "42", "3.14159", "1,000,000", "2024-05-17", "12:30pm", "v2.0-beta", "e-mail@example.com",
    "https://example.com/path?query=1&x=2", "C++ and C#", "#hashtag @mention", "$100 €50 £20 ¥1000",
    "50% off!!!", "(parenthesized) [bracketed] {braced} <angled>", "...", "?!?!", "a/b\\c", "x_y_z", "--flag=value",
    "!@#$%^&*()", "~`|", "a.b.c.d", "1st 2nd 3rd 4th", "99 bottles", "007", "١٢٣ arabic-indic digits", "४२",
    "½ ¼ ¾", "x² y³", "①②③", "Ⅻ ⅻ", "𝟙𝟚𝟛", "٣.١٤", "0x1F", "1e-5", "-273.15°C", "1/3", "#1", "No.5",
    # letters from many scripts
    "café", "naïve", "Ångström", "cafe\u0301", "e\u0301\u0301", "a\u0308\u0301", "o\u0323\u0302", "Straße",
    "STRASSE", "İstanbul", "ıi", "ΟΔΟΣ", "ΣΑΣ", "σοφία ΣΟΦΙΑ", "Σ", "ΑΣ.", "ΑΣ'Α", "ὈΔΥΣΣΕΎΣ", "Москва",
    "Ёлка ЁЖИК", "日本語のテキスト", "中文测试", "漢字かなカナ", "한국어 텍스트", "\u1112\u1161\u11ab\u1100\u1173\u11af",
    "العربية", "עברית", "हिन्दी", "ไทย", "ქართული", "Հայերեն", "አማርኛ", "ᏣᎳᎩ", "ᚠᚢᚦ", "𐌰𐌱𐌲",
    "Ǆ ǅ ǆ", "ǈ", "Ĳssel ĳs", "ŉ", "ﬁne ﬂow ﬀ ﬃ ﬄ ﬅ ﬆ", "ſ alone", "ſtop", "\u212a kelvin", "\u212b angstrom",
    "\u2126 ohm", "µ micro", "\u0958\u0959", "\u0344", "\u0340\u0341", "\u1fb3 \u1fb2", "a\u0345b", "\u0345",
    "q\u0303", "x\u0301y", "\u0301leading mark", "\u093f\u0928", "\u0915\u093c", "\u0e01\u0e34\u0e4a",
    "\u05e9\u05c1\u05b8", "\u1e0b\u0323", "\u1e9b\u0323", "\u00c5\u030a", "\u1100\u1161\u11a8",
    "\uac00\u11a8", "\u1100\uac00", "\u0041\u030a\u0301",
    # emoji and symbols
    "🙂", "👍🏽", "👨‍👩‍👧", "🇫🇷", "🏴\U000e0067\U000e0062\U000e0077\U000e006c\U000e0073\U000e007f", "❤️", "✔ done", "©®™",
    "★☆", "→←↑↓", "∑∏∫", "≤≥≠", "α+β=γ", "∞", "\U0001f600\U0001f601\U0001f602", "emoji🙂inside", "a😀b😀c",
    # width, ligature and C1 fixes
    "ＬＯＵＤ　ＮＯＩＳＥＳ", "ＡＢＣ１２３", "ｶﾀｶﾅ", "ﾊﾟﾋﾟ", "Ｕﾀｰﾝ", "ﾞ", "￦￥￢", "ｈｅｌｌｏ，ｗｏｒｌｄ！",
    "\x93curly\x94", "\x80 euro", "\x85", "\x81\x8d\x8f\x90\x9d", "\x96dash\x97", "\x99",
    # html entities
    "&amp;", "&lt;b&gt;bold&lt;/b&gt;", "<b>&amp;</b>", "&quot;hi&quot;", "&#39;quoted&#39;", "&nbsp;x", "x&nbsp;",
    "&#65;&#x42;&#X43;", "&#128;", "&#0;", "&#13;", "&#xD800;", "&#1114112;", "&#59;", "&#x3B;", "&amp;amp;",
    "&amp;amp;amp;amp;", "&ampfoo", "&notit;", "&notin;", "&EACUTE;", "&SZLIG;", "&eacute;", "&Eacute", "&hellip;",
    "&mdash;", "&#8220;quoted&#8221;", "a&b", "AT&T", "&&", "&;", "&#;", "&#x;", "&#12", "& amp;", "&AMP;",
    "&NTILDE; &nTILDE;", "&Jscr;", "&HilbertSpace;", "&checkmark;", "&fjlig;", "&nbsp&nbsp", "&amp&lt;",
    "&#x1F600;", "&#128512;", "&#x110000;", "&#99999999999999999999;", "&#xFFFFFFFFFFFF;", "&#65", "&#x41x",
    "&thisisaverylongentitynamethatisnotreal;", "&abcdefghijklmnopqrstuvwx;", "&abcdefghijklmnopqrstuvwxy;",
    "&#1;&#2;&#127;&#159;", "&#xFDD0;", "&#xFFFE;", "&lt;&#60;&#x3c;", "&amp;#65;", "&amp;lt;",
    "x &amp; y\n< z &amp; w\n&amp; again", "first &amp;\nthen <tag> &amp;\nlast &amp;", "&lt;no literal angle&gt;",
    "1 < 2 &amp; 3 > 2", "&\u00e9;", "&caf\u00e9;", "&#\u0661\u0662;", "&amp\u3000x",
    # terminal escapes
    "\x1b[31mred\x1b[0m", "\x1b[1;32mbold green\x1b[0m plain", "\x1b[xx", "\x1b]0;title\x07", "esc\x1balone",
    "\x1b[\u0661\u0662m arabic digits", "\x1b[;;;H",
    # the special tokens written in text
    "<|startoftext|>", "<|endoftext|>", "<|STARTOFTEXT|>", "a<|endoftext|>b", "!<|endoftext|>", "<|endoftext|",
    "<|ſtartoftext|>", "<|startoftext|><|endoftext|>", "<| endoftext |>", "<<|endoftext|>>",
]

LONG_TEXTS = [
    ("The quick brown fox jumps over the lazy dog. " * 12).strip(),
    "In the manufacturing line, every metal nut is photographed from above; defects include scratches, "
    "bent edges, colour changes, flipped parts and contamination. " * 4,
    "a" * 300,
    "supercalifragilisticexpialidocious" * 15,
    "1234567890" * 20,
    "!?" * 200,
    "word " * 100,
    "日本語" * 60,
    "🙂" * 90,
    "\n".join(f"line {i}: a photo of a damaged screw" for i in range(30)),
    "x" * 5000,
    "ab" * 2000,
]


def random_strings(rng):
    out = []
    printable = [chr(c) for c in range(0x20, 0x7F)]
    for _ in range(25):
        out.append("".join(rng.choice(printable) for _ in range(rng.randint(1, 40))))
    blocks = [
        (0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
        (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x206F), (0x2100, 0x22FF),
        (0x3000, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFB00, 0xFB4F), (0xFE30, 0xFFFD),
        (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF), (0x20000, 0x200FF), (0xE0000, 0xE007F), (0xF0000, 0xF00FF),
    ]
    for _ in range(70):
        n = rng.randint(1, 30)
        chars = []
        for _ in range(n):
            lo, hi = rng.choice(blocks)
            c = rng.randint(lo, hi)
            if 0xD800 <= c <= 0xDFFF:
                c = 0x20
            chars.append(chr(c))
        out.append("".join(chars))
    return out


INVALID_UTF8 = [
    b"\xff", b"abc\x80def", b"\xe2\x82", b"caf\xe9", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xc0\xaf", b"\xf4\x90\x80\x80",
    b"\xe0\x80\x80", b"\xf8\x88\x80\x80\x80", b"a\xc3", b"\xc3\x28", b"\xe2\x28\xa1", b"\xf0\x28\x8c\x28",
    b"ok \xfe\xfe ok", b"\xef\xbb\xbfbom", b"\xf0\x9f\x99\x82\xf0\x9f", b"metal \xa0 nut",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", default="/work/ref/CLIP")
    ap.add_argument("--vocab", default="/work/shared/clip/bpe_simple_vocab_16e6.txt.gz")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(args.clip, "clip"))  # clip/__init__ needs torch & co; avoid it
    import ftfy
    import simple_tokenizer

    assert ftfy.__version__ == "6.3.1", ftfy.__version__
    tok = simple_tokenizer.SimpleTokenizer(args.vocab)
    rng = random.Random(20240517)

    inputs = []
    for obj in OBJECTS:
        for k in range(3):
            template = TEMPLATES[rng.randrange(len(TEMPLATES))]
            inputs.append(template.format(state=rng.choice(STATES), obj=obj.replace("_", " ") if k else obj))
    inputs += HANDWRITTEN + LONG_TEXTS + random_strings(rng)
    inputs += [s for s in EXPECTED_EXCLUSIONS_TEXT()]
    cases = [s.encode("utf-8") for s in inputs] + INVALID_UTF8

    seen = set()
    kept, excluded = [], {}
    for raw in cases:
        if raw in seen:
            continue
        seen.add(raw)
        text = raw.decode("utf-8", errors="replace")
        if ftfy.fix_text(text) != ftfy.fix_text(text, fix_encoding=False):
            excluded[raw] = ftfy.fix_text(text)
            continue
        kept.append((raw, tok.encode(text)))

    stale = set(excluded) ^ set(EXPECTED_EXCLUSIONS)
    if stale:
        for raw in sorted(stale):
            print("exclusion list out of date:", raw, "->", repr(excluded.get(raw)), file=sys.stderr)
        sys.exit(1)

    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "cases.tsv"), "w", encoding="ascii", newline="\n") as f:
        for raw, ids in kept:
            f.write(raw.hex() + "\t" + " ".join(map(str, ids)) + "\n")

    decode_cases = []
    for raw, ids in kept[::6]:
        decode_cases.append(ids)
    decode_cases.append([])
    decode_cases.append([49406, 320, 1125, 49407])
    n_vocab = len(tok.encoder)
    for _ in range(40):  # arbitrary ids: byte tokens cut UTF-8 sequences, exercising errors="replace"
        decode_cases.append([rng.randrange(n_vocab) for _ in range(rng.randint(1, 12))])
    byte_ids = [i for i in range(512)]  # single-byte tokens, with and without </w>
    for _ in range(20):
        decode_cases.append([rng.choice(byte_ids) for _ in range(rng.randint(1, 8))])
    with open(os.path.join(OUT_DIR, "decode.tsv"), "w", encoding="ascii", newline="\n") as f:
        for ids in decode_cases:
            f.write(" ".join(map(str, ids)) + "\t" + tok.decode(ids).encode("utf-8").hex() + "\n")

    write_nfc_cases(rng)
    write_unicode_digests()

    print(f"cases.tsv: {len(kept)} cases kept, {len(excluded)} excluded (mojibake repair); "
          f"decode.tsv: {len(decode_cases)} cases")


def write_nfc_cases(rng):
    import unicodedata

    decomposable = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF
                    and unicodedata.decomposition(chr(c))[:1] not in ("", "<")]
    marks = [c for c in range(0x300, 0x370)] + [0x323, 0x327, 0x328, 0x345, 0x5B0, 0x5B8, 0x5C1, 0x5BC, 0x93C,
                                                 0x94D, 0xF71, 0xF72, 0xF74, 0xF80, 0x1DCE, 0x1DFA, 0x302A, 0x3099,
                                                 0x309A, 0x1D165, 0x1D16E, 0x20D0, 0x20E3, 0xFE20]
    bases = [ord(x) for x in "aeiounscgzAEIOUNSCGZ"] + [0x3B1, 0x3B7, 0x3C9, 0x391, 0x415, 0x438, 0x5E9, 0x928,
                                                    0x915, 0xB47, 0xBC6, 0xD46, 0xDD9, 0x1025, 0x1B05, 0x304B,
                                                    0x30CF, 0x11099, 0x1133B, 0x11347]
    hangul = list(range(0x1100, 0x1113)) + list(range(0x1161, 0x1176)) + list(range(0x11A7, 0x11C3)) + \
        [0xAC00, 0xAC01, 0xAE4C, 0xD7A3, 0xD7A4]
    special = [0x958, 0x2ADC, 0xFB1D, 0x212B, 0x2126, 0x340, 0x344, 0x387, 0xF73, 0xF75, 0xF81, 0x1F71, 0x2000]
    pools = [decomposable, marks, marks, bases, bases, hangul, special]
    lines = []
    for _ in range(400):
        text = "".join(chr(rng.choice(rng.choice(pools))) for _ in range(rng.randint(1, 8)))
        lines.append(text.encode().hex() + "\t" + unicodedata.normalize("NFC", text).encode().hex())
    with open(os.path.join(OUT_DIR, "nfc.tsv"), "w", encoding="ascii", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def write_unicode_digests():
    import unicodedata
    import zlib

    import regex

    all_cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    p_letter = regex.compile(r"[\p{L}]", regex.IGNORECASE)
    p_number = regex.compile(r"[\p{N}]", regex.IGNORECASE)
    p_other = regex.compile(r"[^\s\p{L}\p{N}]", regex.IGNORECASE)
    p_space = regex.compile(r"\s")

    def crc_of(parts):
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        return crc

    def token_class(ch):
        if p_letter.fullmatch(ch):
            return 0
        if p_number.fullmatch(ch):
            return 1
        return 2 if p_other.fullmatch(ch) else 3

    digests = {
        # lower() of each code point alone (U+03A3 alone is not in a final position: sigma)
        "lower": crc_of(chr(c).lower().encode() for c in all_cps),
        "nfc": crc_of(unicodedata.normalize("NFC", chr(c)).encode() for c in all_cps),
        "token_class": crc_of(bytes([token_class(chr(c))]) for c in all_cps),
        "isspace": crc_of(bytes([chr(c).isspace()]) for c in all_cps),
        "isdecimal": crc_of(bytes([chr(c).isdecimal()]) for c in all_cps),
        "regex_space": crc_of(bytes([bool(p_space.fullmatch(chr(c)))]) for c in all_cps),
    }
    with open(os.path.join(OUT_DIR, "unicode_digests.txt"), "w", encoding="ascii", newline="\n") as f:
        f.write("# name crc32 (see gen_tokenizer_cases.py)\n")
        for name, crc in digests.items():
            f.write(f"{name} {crc}\n")


def EXPECTED_EXCLUSIONS_TEXT():
    return [raw.decode("utf-8") for raw in EXPECTED_EXCLUSIONS]


if __name__ == "__main__":
    main()
