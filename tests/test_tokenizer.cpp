#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "focuspatch/io/inflate.hpp"
#include "focuspatch/io/mapped_file.hpp"
#include "focuspatch/text/clip_clean.hpp"
#include "focuspatch/text/ftfy.hpp"
#include "focuspatch/text/html_unescape.hpp"
#include "focuspatch/text/nfc.hpp"
#include "focuspatch/text/tokenizer.hpp"
#include "focuspatch/text/unicode.hpp"
#include "focuspatch/text/utf8.hpp"
#include "test_paths.hpp"

using namespace focuspatch;

namespace {

std::string from_hex(const std::string& hex) {
  REQUIRE(hex.size() % 2 == 0);
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

std::string to_hex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (char c : s) {
    const auto b = static_cast<unsigned char>(c);
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 15]);
  }
  return out;
}

std::vector<std::int32_t> parse_ids(const std::string& s) {
  std::vector<std::int32_t> ids;
  std::istringstream in(s);
  long long v;
  while (in >> v) ids.push_back(static_cast<std::int32_t>(v));
  return ids;
}

struct TsvRow {
  std::size_t line;
  std::string a, b;
};

std::vector<TsvRow> read_tsv(const std::string& name) {
  const auto path = test::fixtures_dir() / "tokenizer" / name;
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "missing fixture ", path.string());
  std::vector<TsvRow> rows;
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto tab = line.find('\t');
    REQUIRE_MESSAGE(tab != std::string::npos, name, ":", n, " has no TAB");
    rows.push_back({n, line.substr(0, tab), line.substr(tab + 1)});
  }
  return rows;
}

std::string u8(std::u32string_view s) { return text::utf8_encode(s); }
std::u32string u32(std::string_view s) { return text::utf8_decode(s); }

// The tokenizer built from CLIP's real vocabulary, or null (the test then skips) when it is absent.
const ClipTokenizer* openai() {
  static const std::unique_ptr<ClipTokenizer> tok = []() -> std::unique_ptr<ClipTokenizer> {
    if (!test::have_shared_vocab()) return nullptr;
    return std::make_unique<ClipTokenizer>(ClipTokenizer::from_openai_file(test::shared_vocab_path().string()));
  }();
  return tok.get();
}

#define SKIP_WITHOUT_VOCAB()                                                            \
  if (!openai()) {                                                                      \
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");             \
    return;                                                                             \
  }

std::string openai_text() {
  MappedFile file(test::shared_vocab_path().string());
  return gunzip(file.bytes(), file.path());
}

// JSON string literal; every third token uses \u escapes for non-ASCII so both forms are read.
std::string json_string(const std::string& s, bool escape_non_ascii) {
  std::string out = "\"";
  for (char32_t c : text::utf8_decode(s)) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || (escape_non_ascii && c >= 0x80)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04X", static_cast<unsigned>(c));
      out += buf;
    } else {
      text::utf8_append(out, c);
    }
  }
  return out + "\"";
}

std::string make_vocab_json(const std::vector<std::string>& vocab) {
  std::string json = "{\n";
  for (std::size_t id = 0; id < vocab.size(); ++id) {
    json += "  " + json_string(vocab[id], id % 3 == 0) + ": " + std::to_string(id);
    json += id + 1 < vocab.size() ? ",\n" : "\n";
  }
  return json + "}\n";
}

std::string make_merges_txt(const std::vector<std::pair<std::string, std::string>>& merges) {
  std::string txt = "#version: 0.2\n";
  for (const auto& [a, b] : merges) txt += a + " " + b + "\n";
  return txt;
}

}  // namespace

// ---- pieces checked without the vocabulary -------------------------------------------------

TEST_CASE("utf8_decode replaces ill-formed bytes like Python's errors='replace'") {
  const std::u32string R(1, text::kReplacementChar);
  CHECK(u32("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x99\x82") == U"a\u00e9\u20ac\U0001F642");
  CHECK(u32("\xFF") == R);
  CHECK(u32("abc\x80" "def") == U"abc" + R + U"def");
  CHECK(u32("\xE2\x82") == R);                       // truncated sequence: one maximal subpart
  CHECK(u32("\xED\xA0\x80") == R + R + R);           // surrogate: ED is not followed by A0
  CHECK(u32("\xF0\x9F\x98") == R);
  CHECK(u32("\xC0\xAF") == R + R);                   // overlong lead bytes are never valid
  CHECK(u32("\xF4\x90\x80\x80") == R + R + R + R);   // past U+10FFFF
  CHECK(u32("\xE2\x28\xA1") == R + U"(" + R);
  CHECK(text::utf8_valid("caf\xC3\xA9"));
  CHECK_FALSE(text::utf8_valid("caf\xE9"));
  CHECK(u8(U"\U0010FFFF\u0800\u07FF") == "\xF4\x8F\xBF\xBF\xE0\xA0\x80\xDF\xBF");
}

TEST_CASE("Python's lower(): full mappings and the final sigma") {
  CHECK(u8(text::python_lower(U"ABC \u00c9T\u00c9 \u0130")) == u8(U"abc \u00e9t\u00e9 i\u0307"));
  CHECK(text::python_lower(U"\u039f\u0394\u039f\u03a3") == U"\u03bf\u03b4\u03bf\u03c2");  // ΟΔΟΣ -> οδος
  CHECK(text::python_lower(U"\u03a3") == U"\u03c3");                                      // alone: not final
  CHECK(text::python_lower(U"\u03a3\u0391") == U"\u03c3\u03b1");                          // initial
  CHECK(text::python_lower(U"\u0391\u03a3.") == U"\u03b1\u03c2.");                        // before punctuation
  CHECK(text::python_lower(U"\u0391\u03a3'\u0391") == U"\u03b1\u03c3'\u03b1");            // ' is case-ignorable
  CHECK(text::python_lower(U"\u212a\u212b\u2126") == U"k\u00e5\u03c9");                   // Kelvin, Angstrom, Ohm
}

TEST_CASE("NFC composes, reorders and leaves excluded composites decomposed") {
  CHECK(text::nfc(U"cafe\u0301") == U"caf\u00e9");
  CHECK(text::nfc(U"a\u0323\u0302") == U"\u1ead");            // ậ: dot below (220) before circumflex (230)
  CHECK(text::nfc(U"a\u0302\u0323") == U"\u1ead");            // reordered first
  CHECK(text::nfc(U"\u212b") == U"\u00c5");                   // singleton decomposition
  CHECK(text::nfc(U"\u0958") == U"\u0915\u093c");             // composition exclusion
  CHECK(text::nfc(U"\u1100\u1161\u11a8") == U"\uac01");       // Hangul LVT
  CHECK(text::nfc(U"\u0301a") == U"\u0301a");                 // leading mark stays
  CHECK(text::nfc(U"e\u0301\u0301") == U"\u00e9\u0301");      // second acute is blocked
}

TEST_CASE("NFC agrees with unicodedata.normalize on generated sequences") {
  std::size_t checked = 0;
  for (const TsvRow& row : read_tsv("nfc.tsv")) {
    INFO("nfc.tsv:", row.line);
    CHECK(to_hex(u8(text::nfc(u32(from_hex(row.a))))) == row.b);
    ++checked;
  }
  CHECK(checked >= 300);
}

TEST_CASE("character lookups agree with Python for every code point") {
  std::map<std::string, std::uint32_t> expected;
  std::ifstream in(test::fixtures_dir() / "tokenizer" / "unicode_digests.txt");
  REQUIRE(in.good());
  std::string name;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::uint32_t crc = 0;
    ls >> name >> crc;
    expected[name] = crc;
  }
  REQUIRE(expected.size() == 6);
  std::uint32_t lower = 0, nfc = 0, cls = 0, space = 0, decimal = 0, regex_space = 0;
  auto add = [](std::uint32_t& crc, std::string_view bytes) { crc = crc32(std::as_bytes(std::span(bytes)), crc); };
  auto flag = [&](std::uint32_t& crc, int v) {
    const char b = static_cast<char>(v);
    add(crc, std::string_view(&b, 1));
  };
  for (char32_t c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;
    const std::u32string one(1, c);
    add(lower, u8(text::python_lower(one)));
    add(nfc, u8(text::nfc(one)));
    flag(cls, static_cast<int>(text::token_class(c)));
    flag(space, text::is_python_space(c));
    flag(decimal, text::is_decimal(c));
    flag(regex_space, text::is_regex_space(c));
  }
  CHECK(lower == expected["lower"]);
  CHECK(nfc == expected["nfc"]);
  CHECK(cls == expected["token_class"]);
  CHECK(space == expected["isspace"]);
  CHECK(decimal == expected["isdecimal"]);
  CHECK(regex_space == expected["regex_space"]);
}

TEST_CASE("html.unescape") {
  auto un = [](std::u32string_view s) { return u8(text::html_unescape(s)); };
  CHECK(un(U"&amp; &lt; &gt; &quot; &#39; &nbsp;") == u8(U"& < > \" ' \u00a0"));
  CHECK(un(U"&#65;&#x42;&#X43;") == "ABC");
  CHECK(un(U"&amp") == "&");                              // legacy name without ';'
  CHECK(un(U"&ampfoo;") == "&foo;");                      // longest legacy prefix
  CHECK(un(U"&notit;") == u8(U"\u00acit;"));
  CHECK(un(U"&notin;") == u8(U"\u2209"));
  CHECK(un(U"&#128;&#0;&#xD800;&#1114112;") == u8(U"\u20ac\ufffd\ufffd\ufffd"));
  CHECK(un(U"a&#1;b&#xFFFE;c") == "abc");                 // invalid code points vanish
  CHECK(un(U"&bogus; & &#; &#x;") == "&bogus; & &#; &#x;");
  CHECK(un(U"&#99999999999999999999999;") == u8(U"\ufffd"));
}

TEST_CASE("ftfy subset: the examples of ftfy's own documentation") {
  auto fix = [](std::u32string_view s) { return u8(text::ftfy_fix_text(s)); };
  CHECK(fix(U"\uff2c\uff2f\uff35\uff24\u3000\uff2e\uff2f\uff29\uff33\uff25\uff33") == "LOUD NOISES");
  CHECK(fix(U"\uff35\uff80\uff70\uff9d") == u8(U"U\u30bf\u30fc\u30f3"));
  CHECK(fix(U"\ufb02u\ufb03e\ufb06") == "fluffiest");
  CHECK(fix(U"\u201chere\u2019s a test\u201d") == "\"here's a test\"");
  CHECK(fix(U"&ntilde; &Ntilde; &NTILDE; &nTILDE;") == u8(U"\u00f1 \u00d1 \u00d1 &nTILDE;"));
  CHECK(fix(U"P&EACUTE;REZ") == u8(U"P\u00c9REZ"));
  CHECK(fix(U"BUNDESSTRA&SZLIG;E") == "BUNDESSTRASSE");
  CHECK(fix(U"&Jscr;ohn &HilbertSpace;ancock") == u8(U"\U0001d4a5ohn \u210bancock"));
  CHECK(fix(U"Broken text&hellip; it&#x2019;s \ufb02ubberi\ufb01c!") == "Broken text\u2026 it's flubberific!");
  CHECK(fix(U"\x1b[36;44mI'm blue, da ba dee da ba doo...\x1b[0m") == "I'm blue, da ba dee da ba doo...");
  CHECK(fix(U"Content-type: text/plain\r\n\r\nHi.") == "Content-type: text/plain\n\nHi.");
  CHECK(fix(U"&lt;tag&gt;") == "<tag>");
  CHECK(fix(U"<tag> &amp;") == "<tag> &amp;");             // a literal '<' turns unescaping off
  CHECK(fix(U"&amp;\n<\n&amp;") == "&\n<\n&amp;");          // ... for that line and all later ones
  CHECK(fix(U"&amp;amp;amp;") == "&");                      // repeated until nothing changes
  CHECK(fix(U"&#59;") == "&#59;");                          // html.unescape leaves a ';': kept
}

TEST_CASE("clip_clean: strip, whitespace runs, lower") {
  CHECK(u8(text::clip_clean(U"  A  Photo\tOF\n\n a\u00a0NUT  ")) == "a photo of a nut");
  CHECK(u8(text::clip_clean(U"&amp;amp;amp;amp;amp;")) == "&");        // ftfy repeats until stable
  CHECK(u8(text::clip_clean(U"< &amp;amp;amp;amp;")) == "< &amp;amp;");  // ftfy off: html.unescape twice
  CHECK(text::clip_clean(U"").empty());
}

namespace {

// SimpleTokenizer.bpe transcribed literally (strings, global rounds), as an independent reference.
std::vector<std::string> reference_bpe(const std::string& token,
                                       const std::map<std::pair<std::string, std::string>, int>& ranks) {
  std::vector<std::string> word;
  for (std::size_t i = 0; i + 1 < token.size(); ++i) word.emplace_back(1, token[i]);
  word.push_back(std::string(1, token.back()) + "</w>");
  while (word.size() > 1) {
    int best = -1;
    std::pair<std::string, std::string> bigram;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = ranks.find({word[i], word[i + 1]});
      if (it != ranks.end() && (best < 0 || it->second < best)) {
        best = it->second;
        bigram = it->first;
      }
    }
    if (best < 0) break;
    std::vector<std::string> next;
    for (std::size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == bigram.first && word[i + 1] == bigram.second) {
        next.push_back(bigram.first + bigram.second);
        i += 2;
      } else {
        next.push_back(word[i++]);
      }
    }
    word = std::move(next);
  }
  return word;
}

// A small vocabulary over "abcd": the byte alphabet, then random merges of existing tokens in a
// shuffled order, so that ranks are often lower than the ranks that create their parts.
struct SyntheticVocab {
  std::vector<std::string> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
};

SyntheticVocab make_synthetic(std::mt19937& rng) {
  SyntheticVocab v;
  const auto& alphabet = detail::bpe::byte_alphabet();
  for (std::uint8_t b : alphabet.order) v.vocab.push_back(detail::bpe::byte_char(b));
  for (std::uint8_t b : alphabet.order) v.vocab.push_back(detail::bpe::byte_char(b) + "</w>");
  std::vector<std::string> inner = {"a", "b", "c", "d"};
  std::vector<std::string> final = {"a</w>", "b</w>", "c</w>", "d</w>"};
  std::set<std::pair<std::string, std::string>> used;
  std::set<std::string> known(v.vocab.begin(), v.vocab.end());
  for (int k = 0; k < 60; ++k) {
    const std::string& left = inner[rng() % inner.size()];
    const bool to_final = rng() % 3 == 0;
    const std::string& right = to_final ? final[rng() % final.size()] : inner[rng() % inner.size()];
    if (!used.insert({left, right}).second || left.size() + right.size() > 12) continue;
    v.merges.emplace_back(left, right);
    const std::string merged = left + right;
    (to_final ? final : inner).push_back(merged);
    if (known.insert(merged).second) v.vocab.push_back(merged);
  }
  std::shuffle(v.merges.begin(), v.merges.end(), rng);
  v.vocab.emplace_back("<|startoftext|>");
  v.vocab.emplace_back("<|endoftext|>");
  return v;
}

}  // namespace

TEST_CASE("BPE rounds match SimpleTokenizer.bpe on adversarial merge orders") {
  std::mt19937 rng(12345);
  std::size_t words = 0;
  for (int trial = 0; trial < 30; ++trial) {
    const SyntheticVocab v = make_synthetic(rng);
    const ClipTokenizer tok = ClipTokenizer::from_vocab_and_merges(v.vocab, v.merges);
    std::map<std::pair<std::string, std::string>, int> ranks;
    for (std::size_t r = 0; r < v.merges.size(); ++r) ranks[v.merges[r]] = static_cast<int>(r);
    std::map<std::string, std::int32_t> id_of;
    for (std::size_t i = 0; i < v.vocab.size(); ++i) id_of[v.vocab[i]] = static_cast<std::int32_t>(i);
    for (int w = 0; w < 40; ++w) {
      std::string word;
      const int len = 1 + static_cast<int>(rng() % (w < 30 ? 12 : 200));
      for (int k = 0; k < len; ++k) word.push_back("abcd"[rng() % (w % 2 ? 2 : 4)]);
      std::vector<std::int32_t> expected;
      for (const std::string& piece : reference_bpe(word, ranks)) expected.push_back(id_of.at(piece));
      INFO("trial ", trial, " word ", word);
      CHECK(tok.encode(word) == expected);
      ++words;
    }
  }
  CHECK(words == 1200);
}

// ---- OpenAI's vocabulary -------------------------------------------------------------------

TEST_CASE("every fixture case gives OpenAI SimpleTokenizer's ids") {
  SKIP_WITHOUT_VOCAB();
  const ClipTokenizer& tok = *openai();
  CHECK(tok.vocab_size() == 49408);
  CHECK(tok.sot_id() == 49406);
  CHECK(tok.eot_id() == 49407);
  std::size_t checked = 0, failed = 0;
  for (const TsvRow& row : read_tsv("cases.tsv")) {
    const std::string input = from_hex(row.a);
    const auto got = tok.encode(input);
    const auto want = parse_ids(row.b);
    if (got != want) ++failed;
    INFO("cases.tsv:", row.line, " input hex ", row.a);
    CHECK(got == want);
    ++checked;
  }
  CHECK(checked >= 300);
  CHECK(failed == 0);
}

TEST_CASE("tokenize adds start/end tokens and truncates like clip.tokenize(truncate=True)") {
  SKIP_WITHOUT_VOCAB();
  const ClipTokenizer& tok = *openai();
  std::size_t long_cases = 0;
  for (const TsvRow& row : read_tsv("cases.tsv")) {
    const std::string input = from_hex(row.a);
    std::vector<std::int32_t> want = {49406};
    for (std::int32_t id : parse_ids(row.b)) want.push_back(id);
    want.push_back(49407);
    const std::size_t needed = want.size();
    if (want.size() > 77) {
      want.resize(77);
      want.back() = 49407;
      ++long_cases;
      CHECK_THROWS_WITH_AS(tok.tokenize(input, 77, false),
                           doctest::Contains(("needs " + std::to_string(needed) + " tokens but the context length is 77").c_str()),
                           Error);
    } else {
      CHECK(tok.tokenize(input, 77, false) == want);
    }
    INFO("cases.tsv:", row.line);
    CHECK(tok.tokenize(input) == want);
  }
  CHECK(long_cases >= 5);
  CHECK(tok.tokenize("a photo of a dog", 4) == std::vector<std::int32_t>{49406, 320, 1125, 49407});
  CHECK(tok.tokenize("") == std::vector<std::int32_t>{49406, 49407});
  CHECK_THROWS_AS(tok.tokenize("x", 1), Error);
}

TEST_CASE("decode gives SimpleTokenizer.decode's text") {
  SKIP_WITHOUT_VOCAB();
  const ClipTokenizer& tok = *openai();
  std::size_t checked = 0;
  for (const TsvRow& row : read_tsv("decode.tsv")) {
    const auto ids = parse_ids(row.a);
    INFO("decode.tsv:", row.line);
    CHECK(to_hex(tok.decode(ids)) == row.b);
    ++checked;
  }
  CHECK(checked >= 100);
  CHECK(tok.decode(tok.encode("A photo of a scratched METAL nut")) == "a photo of a scratched metal nut ");
  CHECK(tok.decode(tok.tokenize("it's")) == "<|startoftext|>it 's <|endoftext|>");
  const std::vector<std::int32_t> bad = {320, 49408};
  CHECK_THROWS_WITH_AS(tok.decode(bad), doctest::Contains("token id 49408 is outside the vocabulary"), Error);
}

TEST_CASE("decode then encode gives back the same ids") {
  SKIP_WITHOUT_VOCAB();
  const ClipTokenizer& tok = *openai();
  for (const TsvRow& row : read_tsv("cases.tsv")) {
    const auto ids = parse_ids(row.b);
    INFO("cases.tsv:", row.line);
    CHECK(tok.encode(tok.decode(ids)) == ids);
  }
}

TEST_CASE("from_hf on vocab.json/merges.txt written from OpenAI's file equals from_openai_merges") {
  SKIP_WITHOUT_VOCAB();
  const ClipTokenizer& tok = *openai();
  const std::string json = make_vocab_json(tok.vocab());
  CHECK(json.find("\\u0100") != std::string::npos);  // the escaped form is exercised
  const ClipTokenizer hf = ClipTokenizer::from_hf(json, make_merges_txt(tok.merges()));
  CHECK(hf.vocab() == tok.vocab());
  CHECK(hf.merges() == tok.merges());
  CHECK(hf.sot_id() == 49406);
  CHECK(hf.eot_id() == 49407);
  for (const TsvRow& row : read_tsv("cases.tsv")) {
    INFO("cases.tsv:", row.line);
    CHECK(hf.encode(from_hex(row.a)) == parse_ids(row.b));
  }
}

TEST_CASE("from_vocab_and_merges reloads vocab() and merges() losslessly") {
  SKIP_WITHOUT_VOCAB();
  const ClipTokenizer& tok = *openai();
  // The vocabulary as SimpleTokenizer builds it, read independently from the file.
  const std::string text = openai_text();
  CHECK(tok.vocab()[0] == "!");
  CHECK(tok.vocab()[256] == "!</w>");
  CHECK(tok.vocab()[188] == "\xC4\x80");  // byte 0x00 -> U+0100, first of the moved bytes
  const std::size_t first_nl = text.find('\n');
  const std::size_t second_nl = text.find('\n', first_nl + 1);
  const std::string first_merge = text.substr(first_nl + 1, second_nl - first_nl - 1);
  const auto space = first_merge.find(' ');
  CHECK(tok.merges().front() == std::pair{first_merge.substr(0, space), first_merge.substr(space + 1)});
  CHECK(tok.vocab()[512] == first_merge.substr(0, space) + first_merge.substr(space + 1));
  CHECK(tok.merges().size() == 48894);

  const ClipTokenizer copy = ClipTokenizer::from_vocab_and_merges(tok.vocab(), tok.merges());
  CHECK(copy.vocab() == tok.vocab());
  CHECK(copy.merges() == tok.merges());
  ClipTokenizer assigned = copy;  // copies get their own cache
  for (const TsvRow& row : read_tsv("cases.tsv")) {
    INFO("cases.tsv:", row.line);
    CHECK(copy.encode(from_hex(row.a)) == parse_ids(row.b));
    CHECK(assigned.encode(from_hex(row.a)) == parse_ids(row.b));
  }
}

TEST_CASE("long inputs stay fast and round-trip") {
  SKIP_WITHOUT_VOCAB();
  const ClipTokenizer& tok = *openai();
  const std::string word(200000, 'x');  // one pre-token: the BPE must not be quadratic
  CHECK(tok.decode(tok.encode(word)) == word + " ");
  // Many sentences at once give the sentences' ids one after the other.
  std::string prose;
  std::vector<std::int32_t> expected;
  for (int i = 0; i < 20000; ++i) {
    const std::string sentence = "a photo of a scratched metal nut number " + std::to_string(i % 97) + ".";
    const auto ids = tok.encode(sentence);
    expected.insert(expected.end(), ids.begin(), ids.end());
    prose += sentence + (i % 2 ? "\n" : "  ");
  }
  CHECK(tok.encode(prose) == expected);
  CHECK(tok.tokenize(prose).size() == 77);
}

TEST_CASE("encode is safe to call from several threads") {
  SKIP_WITHOUT_VOCAB();
  const ClipTokenizer& tok = *openai();
  const auto rows = read_tsv("cases.tsv");
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3; ++rep)
        for (std::size_t i = static_cast<std::size_t>(t); i < rows.size(); i += 2)
          if (tok.encode(from_hex(rows[i].a)) != parse_ids(rows[i].b)) ++mismatches[static_cast<std::size_t>(t)];
    });
  }
  for (auto& th : threads) th.join();
  CHECK(mismatches == std::vector<int>(4, 0));
}

// ---- errors --------------------------------------------------------------------------------

TEST_CASE("malformed OpenAI merges files are refused") {
  SKIP_WITHOUT_VOCAB();
  const std::string text = openai_text();
  SUBCASE("too few lines") {
    std::size_t cut = 0;
    for (int line = 0; line < 1000; ++line) cut = text.find('\n', cut) + 1;
    CHECK_THROWS_WITH_AS(ClipTokenizer::from_openai_merges(text.substr(0, cut - 1), "short.txt"),
                         doctest::Contains("short.txt: expected 48894 merge lines after the header line, found 999"),
                         Error);
    // With its final newline the cut text has an empty line 1001, which is no merge.
    CHECK_THROWS_WITH_AS(ClipTokenizer::from_openai_merges(text.substr(0, cut), "short.txt"),
                         doctest::Contains("short.txt: line 1001: expected two symbols separated by a space, found 0"),
                         Error);
    CHECK_THROWS_AS(ClipTokenizer::from_openai_merges(""), Error);
  }
  SUBCASE("a line with three symbols") {
    std::string broken = text;
    broken.insert(broken.find('\n', broken.find('\n') + 1), " extra");
    CHECK_THROWS_WITH_AS(ClipTokenizer::from_openai_merges(broken, "bpe.txt"),
                         doctest::Contains("bpe.txt: line 2: expected two symbols separated by a space, found 3"),
                         Error);
  }
  SUBCASE("a symbol outside the byte alphabet") {
    std::string broken = text;
    const std::size_t at = broken.find('\n') + 1;
    broken.replace(at, 1, "\xE2\x82\xAC");  // U+20AC is not one of bytes_to_unicode's characters
    CHECK_THROWS_WITH_AS(ClipTokenizer::from_openai_merges(broken, "bpe.txt"),
                         doctest::Contains("is not made of CLIP's byte-alphabet characters"), Error);
  }
  SUBCASE("gzip damage is reported by the file reader") {
    CHECK_THROWS_AS(ClipTokenizer::from_openai_file((test::fixtures_dir() / "tokenizer" / "cases.tsv").string()),
                    Error);
    CHECK_THROWS_WITH_AS(ClipTokenizer::from_openai_file("/nonexistent/bpe.txt.gz"),
                         doctest::Contains("/nonexistent/bpe.txt.gz: cannot open"), Error);
  }
}

TEST_CASE("malformed vocab.json is refused with the place of the problem") {
  const SyntheticVocab small = [] {
    std::mt19937 rng(7);
    return make_synthetic(rng);
  }();
  const std::string merges = make_merges_txt(small.merges);
  const std::string good = make_vocab_json(small.vocab);
  CHECK(ClipTokenizer::from_hf(good, merges).vocab() == small.vocab);

  auto refuses = [&](const std::string& json, const std::string& message) {
    INFO("json: ", json.substr(0, 80));
    CHECK_THROWS_WITH_AS(ClipTokenizer::from_hf(json, merges), doctest::Contains(message.c_str()), Error);
  };
  refuses(good.substr(0, good.size() / 2), "vocab.json: byte");
  refuses("", "vocab.json: byte 0: unexpected end of file");
  refuses("[1, 2]", "expected '{'");
  refuses("{\"a\": 1.5}", "is not a non-negative integer");
  refuses("{\"a\": -1}", "is not a non-negative integer");
  refuses("{\"a\": \"x\"}", "is not a non-negative integer");
  refuses("{\"a\": 99999999999}", "too large");
  refuses("{\"a\\q\": 0}", "unknown escape");
  refuses("{\"\\uD800\": 0}", "lone high surrogate");
  refuses("{\"\\uDC00\": 0}", "lone low surrogate");
  refuses("{\"\xC3\": 0}", "not valid UTF-8");
  refuses("{\"a\": 0} x", "unexpected text after the closing '}'");
  refuses("{\"a\": 0, \"b\": 0}", "id 0 is given to both 'a' and 'b'");
  refuses("{\"a\": 0, \"b\": 5}", "id 5 of 'b' is outside 0..1");
  refuses("{\"a\": 0}", "lacks the byte token");
  refuses("{\"\xE2\x82\xAC\": 0}", "is not made of CLIP's byte-alphabet characters");

  std::vector<std::string> no_specials(small.vocab.begin(), small.vocab.end() - 2);
  CHECK_THROWS_WITH_AS(ClipTokenizer::from_hf(make_vocab_json(no_specials), merges),
                       doctest::Contains("lacks <|startoftext|>"), Error);
}

TEST_CASE("merges that reference unknown tokens are refused") {
  std::mt19937 rng(99);
  SyntheticVocab v = make_synthetic(rng);
  auto bad = v.merges;
  bad.emplace_back("zz", "a");  // "zz" is not a token
  CHECK_THROWS_WITH_AS(ClipTokenizer::from_vocab_and_merges(v.vocab, bad),
                       doctest::Contains("uses 'zz', which is not in the vocabulary"), Error);
  bad = v.merges;
  bad.emplace_back("d</w>", "a");  // both exist, "d</w>a" does not
  CHECK_THROWS_WITH_AS(ClipTokenizer::from_vocab_and_merges(v.vocab, bad),
                       doctest::Contains("makes 'd</w>a', which is not in the vocabulary"), Error);
  CHECK_THROWS_WITH_AS(ClipTokenizer::from_hf(make_vocab_json(v.vocab), make_merges_txt(v.merges) + "a b c\n"),
                       doctest::Contains("merges.txt: line"), Error);
  CHECK_THROWS_WITH_AS(ClipTokenizer::from_hf(make_vocab_json(v.vocab), make_merges_txt(v.merges) + "q zz\n"),
                       doctest::Contains("which is not in the vocabulary"), Error);
  CHECK_THROWS_AS(ClipTokenizer::from_vocab_and_merges({}, {}), Error);
}
