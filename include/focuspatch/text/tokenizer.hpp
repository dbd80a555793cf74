#pragma once
// CLIP's byte-level BPE tokenizer, giving the same ids as OpenAI's clip/simple_tokenizer.py
// (SimpleTokenizer.encode) and clip.tokenize(..., truncate=True):
//
//   1. UTF-8 is decoded; ill-formed bytes become U+FFFD exactly as Python's
//      bytes.decode("utf-8", errors="replace") would turn them (OpenAI's code takes str, so this
//      is the defined meaning we give to bytes that are not UTF-8);
//   2. clean-up: ftfy.fix_text (the subset in ftfy.hpp: everything but mojibake repair),
//      html.unescape twice, strip, whitespace runs -> one space, str.lower (clip_clean.hpp);
//   3. pre-tokenization by CLIP's pattern (IGNORECASE, `regex` module classes)
//        <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//      where "<|startoftext|>" / "<|endoftext|>" written in the text become the special ids, as in
//      Python;
//   4. each piece's UTF-8 bytes are mapped through bytes_to_unicode, the last one gets "</w>", and
//      merges are applied lowest rank first, every occurrence of the chosen pair left to right per
//      round, exactly like SimpleTokenizer.bpe (implemented in O(n log n) so a long unbroken run of
//      letters cannot stall it).
//
// Vocabulary sources: OpenAI's bpe_simple_vocab_16e6.txt(.gz), Hugging Face vocab.json +
// merges.txt, or the plain (vocab in id order, merges in rank order) form that .fpw files embed.
// encode() is thread-safe; it keeps a bounded cache of word -> ids like the Python one.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/inflate.hpp"
#include "focuspatch/io/mapped_file.hpp"
#include "focuspatch/text/clip_clean.hpp"
#include "focuspatch/text/unicode.hpp"
#include "focuspatch/text/utf8.hpp"

namespace focuspatch {

namespace detail::bpe {

inline constexpr std::string_view kStartOfText = "<|startoftext|>";
inline constexpr std::string_view kEndOfText = "<|endoftext|>";
inline constexpr std::string_view kEndOfWord = "</w>";
// SimpleTokenizer keeps lines[1 : 49152 - 256 - 2 + 1] of the merges file.
inline constexpr std::size_t kOpenAiMerges = 49152 - 256 - 2;

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes are
// moved to U+0100.. in byte order. `order` is the dictionary order SimpleTokenizer's vocab uses.
struct ByteAlphabet {
  std::array<char32_t, 256> to_char{};
  std::array<std::int16_t, 0x144> to_byte{};  // inverse; -1 for characters outside the alphabet
  std::array<std::uint8_t, 256> order{};
};

inline const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet = [] {
    ByteAlphabet a;
    a.to_byte.fill(-1);
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
    std::size_t k = 0;
    for (int b = 0; b < 256; ++b)
      if (printable(b)) {
        a.to_char[b] = static_cast<char32_t>(b);
        a.order[k++] = static_cast<std::uint8_t>(b);
      }
    char32_t next = 256;
    for (int b = 0; b < 256; ++b)
      if (!printable(b)) {
        a.to_char[b] = next++;
        a.order[k++] = static_cast<std::uint8_t>(b);
      }
    for (int b = 0; b < 256; ++b) a.to_byte[a.to_char[b]] = static_cast<std::int16_t>(b);
    return a;
  }();
  return alphabet;
}

inline std::string byte_char(std::uint8_t b) {
  std::string s;
  text::utf8_append(s, byte_alphabet().to_char[b]);
  return s;
}

// The raw bytes a vocabulary token stands for, or nothing when it is not well-formed UTF-8 made of
// byte-alphabet characters. "</w>" is kept: it is ordinary alphabet characters, and decode turns
// it into a space after UTF-8 decoding, as Python does.
inline std::optional<std::string> token_bytes(std::string_view token) {
  if (!text::utf8_valid(token)) return std::nullopt;
  std::string out;
  for (char32_t c : text::utf8_decode(token)) {
    if (c >= byte_alphabet().to_byte.size() || byte_alphabet().to_byte[c] < 0) return std::nullopt;
    out.push_back(static_cast<char>(byte_alphabet().to_byte[c]));
  }
  return out;
}

// For error messages: the start of `s`, cut at a character boundary.
inline std::string quote_token(std::string_view s) {
  std::size_t len = std::min<std::size_t>(s.size(), 60);
  while (len < s.size() && len > 0 && (static_cast<unsigned char>(s[len]) & 0xC0) == 0x80) --len;
  std::string out(1, '\'');
  out.append(s.substr(0, len));
  out.append(len < s.size() ? "...'" : "'");
  return out;
}

// A minimal reader for a JSON object whose values are all non-negative integers (vocab.json).
// Strings are checked to be well-formed UTF-8; \u escapes, surrogate pairs included, are decoded.
class JsonIntObjectReader {
 public:
  JsonIntObjectReader(std::string_view text, std::string_view what) : s_(text), what_(what) {}

  std::vector<std::pair<std::string, std::int64_t>> read() {
    std::vector<std::pair<std::string, std::int64_t>> out;
    skip_ws();
    expect('{', "expected '{' starting the vocabulary object");
    skip_ws();
    if (peek() == '}') {
      ++i_;
    } else {
      for (;;) {
        skip_ws();
        std::string key = read_string();
        skip_ws();
        expect(':', "expected ':' after a key");
        skip_ws();
        const std::int64_t value = read_int(key);
        out.emplace_back(std::move(key), value);
        skip_ws();
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}', "expected ',' or '}' after a value");
        break;
      }
    }
    skip_ws();
    if (i_ != s_.size()) error("unexpected text after the closing '}'");
    return out;
  }

 private:
  [[noreturn]] void error(std::string_view message) const {
    fail(what_, ": byte ", i_, ": ", message);
  }
  int peek() const { return i_ < s_.size() ? static_cast<unsigned char>(s_[i_]) : -1; }
  void skip_ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c, std::string_view message) {
    if (peek() != static_cast<unsigned char>(c)) error(i_ >= s_.size() ? "unexpected end of file" : message);
    ++i_;
  }
  unsigned read_hex4() {
    if (s_.size() - i_ < 4) error("truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= unsigned(c - 'A' + 10);
      else error("bad hex digit in \\u escape");
    }
    return v;
  }
  std::string read_string() {
    expect('"', "expected a string key");
    std::string out;
    const std::size_t start = i_;
    for (;;) {
      if (i_ >= s_.size()) error("unterminated string");
      const char c = s_[i_++];
      if (c == '"') break;
      if (static_cast<unsigned char>(c) < 0x20) error("control character inside a string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (i_ >= s_.size()) error("unterminated string");
      const char e = s_[i_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          unsigned cp = read_hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) error("lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.size() - i_ < 6 || s_[i_] != '\\' || s_[i_ + 1] != 'u') error("lone high surrogate in \\u escape");
            i_ += 2;
            const unsigned low = read_hex4();
            if (low < 0xDC00 || low > 0xDFFF) error("high surrogate not followed by a low one");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          text::utf8_append(out, static_cast<char32_t>(cp));
          break;
        }
        default: error("unknown escape in string");
      }
    }
    if (!text::utf8_valid(out)) {
      i_ = start;
      error("string is not valid UTF-8");
    }
    return out;
  }
  std::int64_t read_int(const std::string& key) {
    const std::size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    const std::size_t digits = i_ - start;
    if (digits == 0 || (i_ < s_.size() && (s_[i_] == '.' || s_[i_] == 'e' || s_[i_] == 'E')) ||
        (digits > 1 && s_[start] == '0')) {
      i_ = start;
      error("the id of " + quote_token(key) + " is not a non-negative integer");
    }
    if (digits > 10) {
      i_ = start;
      error("the id of " + quote_token(key) + " is too large");
    }
    std::int64_t v = 0;
    for (std::size_t k = start; k < i_; ++k) v = v * 10 + (s_[k] - '0');
    return v;
  }

  std::string_view s_;
  std::string_view what_;
  std::size_t i_ = 0;
};

// Splits on ASCII whitespace, as str.split() does for the characters a merges line can hold.
inline std::vector<std::string_view> split_ws(std::string_view line) {
  std::vector<std::string_view> parts;
  std::size_t i = 0;
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; };
  while (i < line.size()) {
    while (i < line.size() && ws(line[i])) ++i;
    const std::size_t start = i;
    while (i < line.size() && !ws(line[i])) ++i;
    if (i > start) parts.push_back(line.substr(start, i - start));
  }
  return parts;
}

inline std::pair<std::string, std::string> parse_merge_line(std::string_view line, std::size_t line_no,
                                                            std::string_view what) {
  const std::vector<std::string_view> parts = split_ws(line);
  require(parts.size() == 2, what, ": line ", line_no, ": expected two symbols separated by a space, found ",
          parts.size(), " (", quote_token(line), ")");
  return {std::string(parts[0]), std::string(parts[1])};
}

}  // namespace detail::bpe

class ClipTokenizer {
 public:
  static constexpr int kContextLength = 77;

  // `bpe_file_text`: the decompressed bpe_simple_vocab_16e6.txt. As in SimpleTokenizer, line 0 is
  // a header and lines 1..48894 are the merges; the vocabulary is the 256 byte characters, the same
  // with "</w>", one token per merge, then <|startoftext|> and <|endoftext|>.
  static ClipTokenizer from_openai_merges(std::string_view bpe_file_text,
                                          std::string_view what = "bpe_simple_vocab_16e6.txt") {
    using namespace detail::bpe;
    std::vector<std::pair<std::string, std::string>> merges;
    merges.reserve(kOpenAiMerges);
    // Lines as text.split('\n') gives them; line 0 is the header.
    std::size_t pos = 0;
    for (std::size_t line_no = 0; merges.size() < kOpenAiMerges; ++line_no) {
      const std::size_t nl = bpe_file_text.find('\n', pos);
      const std::size_t end = nl == std::string_view::npos ? bpe_file_text.size() : nl;
      if (line_no > 0) merges.push_back(parse_merge_line(bpe_file_text.substr(pos, end - pos), line_no + 1, what));
      if (nl == std::string_view::npos) break;
      pos = nl + 1;
    }
    require(merges.size() == kOpenAiMerges, what, ": expected ", kOpenAiMerges,
            " merge lines after the header line, found ", merges.size());
    const auto& alphabet = byte_alphabet();
    std::vector<std::string> vocab;
    vocab.reserve(512 + merges.size() + 2);
    for (std::uint8_t b : alphabet.order) vocab.push_back(byte_char(b));
    for (std::uint8_t b : alphabet.order) vocab.push_back(byte_char(b) + std::string(kEndOfWord));
    for (const auto& [a, b] : merges) vocab.push_back(a + b);
    vocab.emplace_back(kStartOfText);
    vocab.emplace_back(kEndOfText);
    return from_vocab_and_merges(std::move(vocab), std::move(merges), what);
  }

  // Reads bpe_simple_vocab_16e6.txt.gz (gzip, recognised by its magic) or the plain text.
  static ClipTokenizer from_openai_file(const std::string& path) {
    MappedFile file(path);
    const auto bytes = file.bytes();
    if (bytes.size() >= 2 && bytes[0] == std::byte{0x1f} && bytes[1] == std::byte{0x8b})
      return from_openai_merges(gunzip(bytes, path), path);
    return from_openai_merges(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
  }

  // Hugging Face's vocab.json (token -> id, ids 0..n-1 each used once) and merges.txt (an optional
  // "#version" first line, then one "left right" pair per line, blank lines ignored; all merges
  // are used). <|startoftext|> and <|endoftext|> are found by name.
  static ClipTokenizer from_hf(std::string_view vocab_json, std::string_view merges_txt,
                               std::string_view vocab_what = "vocab.json",
                               std::string_view merges_what = "merges.txt") {
    using namespace detail::bpe;
    const auto entries = JsonIntObjectReader(vocab_json, vocab_what).read();
    std::vector<std::string> vocab(entries.size());
    std::vector<bool> seen(entries.size(), false);
    for (const auto& [token, id] : entries) {
      require(id < static_cast<std::int64_t>(entries.size()), vocab_what, ": id ", id, " of ", quote_token(token),
              " is outside 0..", entries.size() - 1, " (ids must number the tokens densely)");
      const auto k = static_cast<std::size_t>(id);
      require(!seen[k], vocab_what, ": id ", id, " is given to both ", quote_token(vocab[k]), " and ", quote_token(token));
      seen[k] = true;
      vocab[k] = token;
    }
    std::vector<std::pair<std::string, std::string>> merges;
    std::size_t pos = 0, line_no = 0;
    while (pos < merges_txt.size()) {
      const std::size_t nl = merges_txt.find('\n', pos);
      const std::size_t end = nl == std::string_view::npos ? merges_txt.size() : nl;
      const std::string_view line = merges_txt.substr(pos, end - pos);
      ++line_no;
      pos = end + 1;
      if (line_no == 1 && line.starts_with("#version")) continue;
      if (split_ws(line).empty()) continue;
      merges.push_back(parse_merge_line(line, line_no, merges_what));
    }
    return from_vocab_and_merges(std::move(vocab), std::move(merges),
                                 std::string(vocab_what) + " + " + std::string(merges_what));
  }

  // The storage form: tokens in id order (byte-alphabet strings, as in vocab.json) and merges in
  // rank order. Every merge's parts and result must be tokens; every byte character, with and
  // without "</w>", and both specials must be present. Where a token string repeats, the last id
  // wins for lookups, as in SimpleTokenizer's dict.
  static ClipTokenizer from_vocab_and_merges(std::vector<std::string> vocab,
                                             std::vector<std::pair<std::string, std::string>> merges,
                                             std::string_view what = "tokenizer data") {
    using namespace detail::bpe;
    ClipTokenizer t;
    require(!vocab.empty(), what, ": the vocabulary is empty");
    require(vocab.size() < (std::size_t{1} << 31), what, ": the vocabulary is too large (", vocab.size(), ")");
    std::unordered_map<std::string, std::int32_t> id_of;
    id_of.reserve(vocab.size());
    t.token_bytes_.reserve(vocab.size());
    for (std::size_t id = 0; id < vocab.size(); ++id) {
      auto bytes = token_bytes(vocab[id]);
      require(bytes.has_value(), what, ": token ", id, " ", quote_token(vocab[id]),
              " is not made of CLIP's byte-alphabet characters");
      require(!vocab[id].empty(), what, ": token ", id, " is empty");
      t.token_bytes_.push_back(std::move(*bytes));
      id_of[vocab[id]] = static_cast<std::int32_t>(id);
    }
    auto lookup = [&](const std::string& token) -> std::optional<std::int32_t> {
      auto it = id_of.find(token);
      if (it == id_of.end()) return std::nullopt;
      return it->second;
    };
    for (int b = 0; b < 256; ++b) {
      const std::string c = byte_char(static_cast<std::uint8_t>(b));
      const auto plain = lookup(c);
      const auto end = lookup(c + std::string(kEndOfWord));
      require(plain.has_value(), what, ": the vocabulary lacks the byte token ", quote_token(c), " (byte ", b, ")");
      require(end.has_value(), what, ": the vocabulary lacks the byte token ", quote_token(c + "</w>"), " (byte ", b,
              ")");
      t.byte_id_[b] = *plain;
      t.byte_end_id_[b] = *end;
    }
    const auto sot = lookup(std::string(kStartOfText));
    const auto eot = lookup(std::string(kEndOfText));
    require(sot.has_value(), what, ": the vocabulary lacks ", kStartOfText);
    require(eot.has_value(), what, ": the vocabulary lacks ", kEndOfText);
    t.sot_ = *sot;
    t.eot_ = *eot;
    require(merges.size() < (std::size_t{1} << 31), what, ": too many merges (", merges.size(), ")");
    t.merge_of_.reserve(merges.size());
    for (std::size_t rank = 0; rank < merges.size(); ++rank) {
      const auto& [a, b] = merges[rank];
      const auto ia = lookup(a);
      const auto ib = lookup(b);
      require(ia.has_value(), what, ": merge ", rank, " (", quote_token(a), " ", quote_token(b), ") uses ", quote_token(a),
              ", which is not in the vocabulary");
      require(ib.has_value(), what, ": merge ", rank, " (", quote_token(a), " ", quote_token(b), ") uses ", quote_token(b),
              ", which is not in the vocabulary");
      const auto merged = lookup(a + b);
      require(merged.has_value(), what, ": merge ", rank, " (", quote_token(a), " ", quote_token(b), ") makes ",
              quote_token(a + b), ", which is not in the vocabulary");
      // A repeated pair keeps its last rank, as dict(zip(merges, range(...))) does.
      t.merge_of_[pair_key(*ia, *ib)] = Merge{static_cast<std::int32_t>(rank), *merged};
    }
    t.vocab_ = std::move(vocab);
    t.merges_ = std::move(merges);
    return t;
  }

  ClipTokenizer(const ClipTokenizer& other)
      : vocab_(other.vocab_),
        merges_(other.merges_),
        token_bytes_(other.token_bytes_),
        byte_id_(other.byte_id_),
        byte_end_id_(other.byte_end_id_),
        merge_of_(other.merge_of_),
        sot_(other.sot_),
        eot_(other.eot_),
        cache_(std::make_unique<Cache>()) {}
  ClipTokenizer& operator=(const ClipTokenizer& other) {
    if (this != &other) *this = ClipTokenizer(other);
    return *this;
  }
  ClipTokenizer(ClipTokenizer&&) noexcept = default;
  ClipTokenizer& operator=(ClipTokenizer&&) noexcept = default;
  ~ClipTokenizer() = default;

  const std::vector<std::string>& vocab() const { return vocab_; }
  const std::vector<std::pair<std::string, std::string>>& merges() const { return merges_; }
  std::size_t vocab_size() const { return vocab_.size(); }
  std::int32_t sot_id() const { return sot_; }
  std::int32_t eot_id() const { return eot_; }

  // SimpleTokenizer.encode: ids without the start/end tokens.
  std::vector<std::int32_t> encode(std::string_view utf8) const {
    const std::u32string text = text::clip_clean(text::utf8_decode(utf8));
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    std::string bytes;
    const std::size_t n = text.size();
    std::size_t i = 0;
    while (i < n) {
      std::size_t len = match_literal_alternative(text, i);
      if (len == 0) {
        switch (text::token_class(text[i])) {
          case text::TokenClass::skip: ++i; continue;
          case text::TokenClass::number: len = 1; break;
          case text::TokenClass::letter:
          case text::TokenClass::other: {
            const text::TokenClass cls = text::token_class(text[i]);
            len = 1;
            while (i + len < n && text::token_class(text[i + len]) == cls) ++len;
            break;
          }
        }
      }
      const std::u32string_view piece(text.data() + i, len);
      i += len;
      if (piece == U"<|startoftext|>") {
        ids.push_back(sot_);
      } else if (piece == U"<|endoftext|>") {
        ids.push_back(eot_);
      } else {
        bytes = text::utf8_encode(piece);
        append_bpe(bytes, ids);
      }
    }
    return ids;
  }

  // clip.tokenize for one text, without the zero padding: [sot] + encode(text) + [eot]. When that
  // is longer than context_length it is cut to context_length with eot as the last id, or, with
  // truncate == false, refused.
  std::vector<std::int32_t> tokenize(std::string_view utf8, int context_length = kContextLength,
                                     bool truncate = true) const {
    require(context_length >= 2, "tokenize: context length ", context_length,
            " leaves no room for the start and end tokens");
    std::vector<std::int32_t> ids;
    ids.push_back(sot_);
    const std::vector<std::int32_t> body = encode(utf8);
    ids.insert(ids.end(), body.begin(), body.end());
    ids.push_back(eot_);
    const auto limit = static_cast<std::size_t>(context_length);
    if (ids.size() > limit) {
      require(truncate, "tokenize: the text needs ", ids.size(), " tokens but the context length is ",
              context_length, " (", detail::bpe::quote_token(utf8), ")");
      ids.resize(limit);
      ids.back() = eot_;
    }
    return ids;
  }

  // SimpleTokenizer.decode: token bytes joined, decoded as UTF-8 with U+FFFD for ill-formed parts,
  // "</w>" turned into a space. The special tokens come out as their names.
  std::string decode(std::span<const std::int32_t> ids) const {
    std::string bytes;
    for (std::int32_t id : ids) {
      require(id >= 0 && static_cast<std::size_t>(id) < token_bytes_.size(), "decode: token id ", id,
              " is outside the vocabulary [0, ", token_bytes_.size(), ")");
      bytes += token_bytes_[static_cast<std::size_t>(id)];
    }
    const std::string utf8 = text::utf8_encode(text::utf8_decode(bytes));
    std::string out;
    out.reserve(utf8.size());
    for (std::size_t i = 0; i < utf8.size();) {
      if (utf8.compare(i, detail::bpe::kEndOfWord.size(), detail::bpe::kEndOfWord) == 0) {
        out.push_back(' ');
        i += detail::bpe::kEndOfWord.size();
      } else {
        out.push_back(utf8[i++]);
      }
    }
    return out;
  }

 private:
  struct Merge {
    std::int32_t rank;
    std::int32_t merged;
  };
  struct Cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::int32_t>> words;
  };
  static constexpr std::size_t kCacheMaxWords = 1 << 16;
  static constexpr std::size_t kCacheMaxWordBytes = 128;

  ClipTokenizer() : cache_(std::make_unique<Cache>()) {}

  static std::uint64_t pair_key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }

  // Length of a match of the pattern's literal alternatives at text[i], or 0. IGNORECASE uses
  // simple case folding, under which U+017F LONG S matches 's' (the table generator checks that
  // no other non-ASCII character folds onto these letters).
  static std::size_t match_literal_alternative(std::u32string_view text, std::size_t i) {
    auto matches = [&](std::string_view literal) {
      if (text.size() - i < literal.size()) return false;
      for (std::size_t k = 0; k < literal.size(); ++k) {
        const char32_t c = text[i + k];
        const char l = literal[k];
        const bool letter = l >= 'a' && l <= 'z';
        if (c == static_cast<char32_t>(l)) continue;
        if (letter && c == static_cast<char32_t>(l - 32)) continue;
        if (l == 's' && c == 0x17F) continue;
        return false;
      }
      return true;
    };
    if (text[i] == '<') {
      for (std::string_view special : {detail::bpe::kStartOfText, detail::bpe::kEndOfText})
        if (matches(special)) return special.size();
    } else if (text[i] == '\'') {
      for (std::string_view contraction : {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"})
        if (matches(contraction)) return contraction.size();
    }
    return 0;
  }

  void append_bpe(const std::string& word, std::vector<std::int32_t>& out) const {
    const bool cacheable = word.size() <= kCacheMaxWordBytes;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      auto it = cache_->words.find(word);
      if (it != cache_->words.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<std::int32_t> ids = bpe(word);
    out.insert(out.end(), ids.begin(), ids.end());
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_->mutex);
      if (cache_->words.size() >= kCacheMaxWords) cache_->words.clear();
      cache_->words.emplace(word, std::move(ids));
    }
  }

  // SimpleTokenizer.bpe on the ids of one word. Each round takes the lowest-ranked pair present and
  // merges all its occurrences left to right; a round's merges cannot create that same pair again
  // (a merged token is longer than either part), so popping every heap entry of that rank first
  // and then merging them in position order reproduces the round exactly.
  std::vector<std::int32_t> bpe(std::string_view word) const {
    const std::size_t n = word.size();
    std::vector<std::int32_t> sym(n);
    for (std::size_t k = 0; k < n; ++k) sym[k] = byte_id_[static_cast<std::uint8_t>(word[k])];
    sym[n - 1] = byte_end_id_[static_cast<std::uint8_t>(word[n - 1])];
    if (n == 1) return sym;

    std::vector<std::int32_t> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (std::size_t k = 0; k < n; ++k) {
      prev[k] = static_cast<std::int32_t>(k) - 1;
      next[k] = k + 1 < n ? static_cast<std::int32_t>(k + 1) : -1;
    }
    using Entry = std::pair<std::int32_t, std::int32_t>;  // (rank, left position)
    std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
    auto rank_at = [&](std::int32_t left) -> const Merge* {
      const std::int32_t right = next[static_cast<std::size_t>(left)];
      if (right < 0) return nullptr;
      auto it = merge_of_.find(pair_key(sym[static_cast<std::size_t>(left)], sym[static_cast<std::size_t>(right)]));
      return it == merge_of_.end() ? nullptr : &it->second;
    };
    auto push = [&](std::int32_t left) {
      if (const Merge* m = rank_at(left)) heap.emplace(m->rank, left);
    };
    for (std::size_t k = 0; k + 1 < n; ++k) push(static_cast<std::int32_t>(k));

    std::vector<std::int32_t> round;
    while (!heap.empty()) {
      const std::int32_t rank = heap.top().first;
      round.clear();
      while (!heap.empty() && heap.top().first == rank) {
        round.push_back(heap.top().second);
        heap.pop();
      }
      for (std::int32_t p : round) {
        const auto pu = static_cast<std::size_t>(p);
        if (!alive[pu]) continue;
        const Merge* m = rank_at(p);
        if (!m || m->rank != rank) continue;  // stale: this pair has changed since it was queued
        const auto qu = static_cast<std::size_t>(next[pu]);
        sym[pu] = m->merged;
        alive[qu] = false;
        next[pu] = next[qu];
        if (next[qu] >= 0) prev[static_cast<std::size_t>(next[qu])] = p;
        if (prev[pu] >= 0) push(prev[pu]);
        push(p);
      }
    }
    std::vector<std::int32_t> out;
    for (std::int32_t k = 0; k >= 0; k = next[static_cast<std::size_t>(k)]) out.push_back(sym[static_cast<std::size_t>(k)]);
    return out;
  }

  std::vector<std::string> vocab_;
  std::vector<std::pair<std::string, std::string>> merges_;
  std::vector<std::string> token_bytes_;
  std::array<std::int32_t, 256> byte_id_{};
  std::array<std::int32_t, 256> byte_end_id_{};
  std::unordered_map<std::uint64_t, Merge> merge_of_;
  std::int32_t sot_ = 0;
  std::int32_t eot_ = 0;
  std::unique_ptr<Cache> cache_;
};

}  // namespace focuspatch
