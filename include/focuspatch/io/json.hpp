#pragma once
// A small strict JSON reader (RFC 8259) and writer. The reader serves safetensors headers and
// Hugging Face config.json files, which come from outside and may be truncated or hostile: input
// must be valid UTF-8, nesting depth is bounded, duplicate keys and lone surrogates are errors, and
// every error names the input and the byte offset. Objects keep their members in file order
// (safetensors tensor order, readable dumps) with a sorted index for lookups. The writer emits the
// command-line tools' --json output.
#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "focuspatch/core/error.hpp"

namespace focuspatch::json {

enum class Type : std::uint8_t { Null, Bool, Number, String, Array, Object };

inline std::string_view type_name(Type t) {
  switch (t) {
    case Type::Null: return "null";
    case Type::Bool: return "boolean";
    case Type::Number: return "number";
    case Type::String: return "string";
    case Type::Array: return "array";
    case Type::Object: return "object";
  }
  return "unknown";
}

namespace detail {
// Length of the well-formed UTF-8 sequence starting at p (at most n bytes available), or 0 when
// the bytes are not well-formed (overlong forms, surrogates and code points above U+10FFFF are
// rejected, as in Unicode's table 3-7).
inline std::size_t utf8_sequence_length(const unsigned char* p, std::size_t n) {
  if (n == 0) return 0;
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  auto cont = [&](std::size_t i) { return i < n && (p[i] & 0xc0) == 0x80; };
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (n < 2) return 0;
    const unsigned char lo = c == 0xe0 ? 0xa0 : 0x80;
    const unsigned char hi = c == 0xed ? 0x9f : 0xbf;
    return (p[1] >= lo && p[1] <= hi && cont(2)) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (n < 2) return 0;
    const unsigned char lo = c == 0xf0 ? 0x90 : 0x80;
    const unsigned char hi = c == 0xf4 ? 0x8f : 0xbf;
    return (p[1] >= lo && p[1] <= hi && cont(2) && cont(3)) ? 4 : 0;
  }
  return 0;
}

inline void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}
class Parser;
}  // namespace detail

class Value {
 public:
  using Array = std::vector<Value>;
  using Member = std::pair<std::string, Value>;
  using Object = std::vector<Member>;

  Value() = default;  // null
  static Value boolean(bool b) {
    Value v;
    v.type_ = Type::Bool;
    v.bool_ = b;
    return v;
  }
  // A number; it also counts as an integer when the double holds an integer exactly (|x| <= 2^53).
  static Value number(double d) {
    Value v;
    v.type_ = Type::Number;
    v.number_ = d;
    if (std::isfinite(d) && std::trunc(d) == d && std::fabs(d) <= 9007199254740992.0) {
      v.integral_ = true;
      v.int_ = static_cast<std::int64_t>(d);
    }
    return v;
  }
  static Value integer(std::int64_t i) {
    Value v;
    v.type_ = Type::Number;
    v.number_ = static_cast<double>(i);
    v.integral_ = true;
    v.int_ = i;
    return v;
  }
  static Value string(std::string s) {
    Value v;
    v.type_ = Type::String;
    v.string_ = std::move(s);
    return v;
  }
  static Value array(Array items) {
    Value v;
    v.type_ = Type::Array;
    v.array_ = std::move(items);
    return v;
  }
  // Throws Error when two members share a key.
  static Value object(Object members) {
    Value v;
    v.type_ = Type::Object;
    v.object_ = std::move(members);
    if (const std::string* dup = v.build_index()) fail("JSON object has the key '", *dup, "' twice");
    return v;
  }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_number() const { return type_ == Type::Number; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }
  // A number with an exact int64 value: an integer literal that fits, or an integral double.
  bool is_integer() const { return type_ == Type::Number && integral_; }

  bool as_bool() const { return expect(Type::Bool).bool_; }
  double as_double() const { return expect(Type::Number).number_; }
  std::int64_t as_int64() const {
    expect(Type::Number);
    if (!integral_) fail("JSON number ", number_, " is not an integer");
    return int_;
  }
  const std::string& as_string() const { return expect(Type::String).string_; }
  const Array& as_array() const { return expect(Type::Array).array_; }
  const Object& as_object() const { return expect(Type::Object).object_; }

  // Element count of an array or member count of an object; 0 for scalars.
  std::size_t size() const {
    return type_ == Type::Array ? array_.size() : type_ == Type::Object ? object_.size() : 0;
  }
  const Value& operator[](std::size_t i) const {
    const Array& a = as_array();
    if (i >= a.size()) fail("JSON array index ", i, " is out of range (size ", a.size(), ")");
    return a[i];
  }
  // The member's value, or nullptr when this is not an object or has no such key.
  const Value* find(std::string_view key) const {
    if (type_ != Type::Object) return nullptr;
    auto it = std::lower_bound(index_.begin(), index_.end(), key,
                               [&](std::uint32_t i, std::string_view k) { return object_[i].first < k; });
    if (it == index_.end() || object_[*it].first != key) return nullptr;
    return &object_[*it].second;
  }
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  const Value& at(std::string_view key) const {
    expect(Type::Object);
    const Value* v = find(key);
    if (!v) fail("JSON object has no key '", key, "'");
    return *v;
  }

 private:
  friend class detail::Parser;

  const Value& expect(Type t) const {
    if (type_ != t) fail("JSON value is ", article(type_), type_name(type_), ", expected ", article(t), type_name(t));
    return *this;
  }
  static std::string_view article(Type t) { return t == Type::Array || t == Type::Object ? "an " : "a "; }

  // Sorts member positions by key; returns the first duplicated key, if any.
  const std::string* build_index() {
    index_.resize(object_.size());
    for (std::size_t i = 0; i < index_.size(); ++i) index_[i] = static_cast<std::uint32_t>(i);
    std::stable_sort(index_.begin(), index_.end(),
                     [&](std::uint32_t a, std::uint32_t b) { return object_[a].first < object_[b].first; });
    for (std::size_t i = 1; i < index_.size(); ++i)
      if (object_[index_[i]].first == object_[index_[i - 1]].first) return &object_[index_[i]].first;
    return nullptr;
  }

  Type type_ = Type::Null;
  bool bool_ = false;
  bool integral_ = false;
  double number_ = 0.0;
  std::int64_t int_ = 0;
  std::string string_;
  Array array_;
  Object object_;
  std::vector<std::uint32_t> index_;  // object member positions sorted by key
};

struct ParseOptions {
  std::size_t max_depth = 256;  // arrays and objects nested deeper than this are refused
};

namespace detail {

class Parser {
 public:
  Parser(std::string_view text, std::string_view what, const ParseOptions& options)
      : text_(text), what_(what), options_(options) {}

  Value parse_document() {
    // RFC 8259 lets parsers skip a byte order mark; editors on some systems write one.
    if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
    skip_ws();
    Value v = parse_value(0);
    skip_ws();
    if (pos_ != text_.size()) error("unexpected data after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void error(std::string_view message) const { error_at(pos_, message); }
  [[noreturn]] void error_at(std::size_t at, std::string_view message) const {
    std::size_t line = 1, column = 1;
    for (std::size_t i = 0; i < at && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    fail(what_, ": invalid JSON at byte ", at, " (line ", line, ", column ", column, "): ", message);
  }

  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }
  void skip_ws() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++pos_;
  }
  void expect_literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) error("invalid literal, expected '" + std::string(word) + "'");
    pos_ += word.size();
  }

  Value parse_value(std::size_t depth) {
    if (at_end()) error("unexpected end of input, expected a value");
    switch (peek()) {
      case '{': return parse_object(depth + 1);
      case '[': return parse_array(depth + 1);
      case '"': return Value::string(parse_string());
      case 't': expect_literal("true"); return Value::boolean(true);
      case 'f': expect_literal("false"); return Value::boolean(false);
      case 'n': expect_literal("null"); return Value();
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return parse_number();
        error(std::string("unexpected character '") + printable(peek()) + "', expected a value");
    }
  }

  static std::string printable(char c) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f) return std::string(1, c);
    static const char* hex = "0123456789abcdef";
    return std::string("\\x") + hex[u >> 4] + hex[u & 15];
  }

  void check_depth(std::size_t depth) const {
    if (depth > options_.max_depth) error("nesting is deeper than " + std::to_string(options_.max_depth) + " levels");
  }

  Value parse_array(std::size_t depth) {
    check_depth(depth);
    ++pos_;  // '['
    Value::Array items;
    skip_ws();
    if (!at_end() && peek() == ']') {
      ++pos_;
      return Value::array(std::move(items));
    }
    while (true) {
      skip_ws();
      items.push_back(parse_value(depth));
      skip_ws();
      if (at_end()) error("unexpected end of input inside an array");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return Value::array(std::move(items));
      }
      error("expected ',' or ']' in an array");
    }
  }

  Value parse_object(std::size_t depth) {
    check_depth(depth);
    const std::size_t start = pos_;
    ++pos_;  // '{'
    Value v;
    v.type_ = Type::Object;
    skip_ws();
    if (!at_end() && peek() == '}') {
      ++pos_;
      return v;
    }
    while (true) {
      skip_ws();
      if (at_end() || peek() != '"') error("expected a string key in an object");
      std::string key = parse_string();
      skip_ws();
      if (at_end() || peek() != ':') error("expected ':' after an object key");
      ++pos_;
      skip_ws();
      Value member = parse_value(depth);
      v.object_.emplace_back(std::move(key), std::move(member));
      skip_ws();
      if (at_end()) error("unexpected end of input inside an object");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        break;
      }
      error("expected ',' or '}' in an object");
    }
    if (const std::string* dup = v.build_index()) error_at(start, "object has the key '" + *dup + "' twice");
    return v;
  }

  unsigned parse_hex4() {
    if (text_.size() - pos_ < 4) error("truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_ + static_cast<std::size_t>(i)];
      unsigned d;
      if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A' + 10);
      else error("invalid hex digit in \\u escape");
      v = v * 16 + d;
    }
    pos_ += 4;
    return v;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (at_end()) error("unterminated string");
      const auto c = static_cast<unsigned char>(peek());
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) error("control character " + printable(static_cast<char>(c)) + " must be escaped in a string");
      if (c == '\\') {
        const std::size_t escape_at = pos_;
        ++pos_;
        if (at_end()) error("unterminated escape sequence");
        const char e = peek();
        ++pos_;
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            std::uint32_t cp = parse_hex4();
            if (cp >= 0xdc00 && cp <= 0xdfff) error_at(escape_at, "lone low surrogate in \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
              if (text_.substr(pos_, 2) != "\\u") error_at(escape_at, "high surrogate not followed by a low surrogate");
              pos_ += 2;
              const std::uint32_t low = parse_hex4();
              if (low < 0xdc00 || low > 0xdfff) error_at(escape_at, "high surrogate not followed by a low surrogate");
              cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            }
            append_utf8(out, cp);
            break;
          }
          default: error_at(escape_at, "invalid escape sequence '\\" + printable(e) + "'");
        }
        continue;
      }
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      const std::size_t n = utf8_sequence_length(reinterpret_cast<const unsigned char*>(text_.data()) + pos_,
                                                 text_.size() - pos_);
      if (n == 0) error("invalid UTF-8 in string");
      out.append(text_.substr(pos_, n));
      pos_ += n;
    }
  }

  Value parse_number() {
    const std::size_t start = pos_;
    auto digit = [&] { return !at_end() && peek() >= '0' && peek() <= '9'; };
    if (peek() == '-') ++pos_;
    if (!digit()) error("expected a digit in a number");
    if (peek() == '0') {
      ++pos_;
      if (digit()) error_at(start, "numbers must not have leading zeros");
    } else {
      while (digit()) ++pos_;
    }
    bool integral = true;
    if (!at_end() && peek() == '.') {
      integral = false;
      ++pos_;
      if (!digit()) error("expected a digit after the decimal point");
      while (digit()) ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      integral = false;
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-')) ++pos_;
      if (!digit()) error("expected a digit in the exponent");
      while (digit()) ++pos_;
    }
    const std::string_view token = text_.substr(start, pos_ - start);
    const char* first = token.data();
    const char* last = token.data() + token.size();
    if (integral) {
      std::int64_t i = 0;
      const auto r = std::from_chars(first, last, i);
      if (r.ec == std::errc() && r.ptr == last) return Value::integer(i);
      // Larger than int64: fall through and keep it as a double.
    }
    double d = 0.0;
    const auto r = std::from_chars(first, last, d);
    if (r.ec == std::errc::result_out_of_range) {
      if (decimal_magnitude(token) > 0) error_at(start, "number " + std::string(token) + " is out of range");
      d = token[0] == '-' ? -0.0 : 0.0;  // underflow rounds to zero, as strtod does
    } else if (r.ec != std::errc() || r.ptr != last) {
      error_at(start, "invalid number " + std::string(token));
    }
    return Value::number(d);
  }

  // Roughly log10 of a valid number token's magnitude, only used to tell overflow from underflow.
  static long decimal_magnitude(std::string_view token) {
    std::size_t i = token[0] == '-' ? 1 : 0;
    long magnitude = 0;
    bool seen_nonzero = false;
    for (; i < token.size() && token[i] >= '0' && token[i] <= '9'; ++i) {
      if (token[i] != '0') seen_nonzero = true;
      if (seen_nonzero) ++magnitude;
    }
    if (i < token.size() && token[i] == '.') {
      for (++i; i < token.size() && token[i] >= '0' && token[i] <= '9'; ++i) {
        if (seen_nonzero) continue;
        if (token[i] != '0') seen_nonzero = true;
        else --magnitude;
      }
    }
    if (i < token.size() && (token[i] == 'e' || token[i] == 'E')) {
      long exponent = 0;
      const bool negative = token[i + 1] == '-';
      for (++i; i < token.size(); ++i) {
        if (token[i] >= '0' && token[i] <= '9' && exponent < 1'000'000'000) exponent = exponent * 10 + (token[i] - '0');
      }
      magnitude += negative ? -exponent : exponent;
    }
    return magnitude;
  }

  std::string_view text_;
  std::string_view what_;
  const ParseOptions& options_;
  std::size_t pos_ = 0;
};

}  // namespace detail

// Parses a whole JSON document; `what` names the input (a path, "model.safetensors header") in
// error messages.
inline Value parse(std::string_view text, std::string_view what, const ParseOptions& options = {}) {
  return detail::Parser(text, what, options).parse_document();
}

// ---- writing --------------------------------------------------------------------------------

// The string as a quoted JSON string. Invalid UTF-8 bytes (file names on Linux need not be UTF-8)
// become U+FFFD so the output is always valid JSON.
inline std::string quote(std::string_view s) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char c = p[i];
    switch (c) {
      case '"': out += "\\\""; ++i; continue;
      case '\\': out += "\\\\"; ++i; continue;
      case '\b': out += "\\b"; ++i; continue;
      case '\f': out += "\\f"; ++i; continue;
      case '\n': out += "\\n"; ++i; continue;
      case '\r': out += "\\r"; ++i; continue;
      case '\t': out += "\\t"; ++i; continue;
      default: break;
    }
    if (c < 0x20) {
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
      ++i;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
      ++i;
    } else if (const std::size_t n = detail::utf8_sequence_length(p + i, s.size() - i)) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  out += '"';
  return out;
}

// Shortest text that reads back to the same double. JSON has no NaN or infinity; they become null.
inline std::string format_number(double d) {
  if (!std::isfinite(d)) return "null";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof(buf), d);
  return std::string(buf, r.ptr);
}

// Streams JSON text, inserting commas (and newlines plus indentation when indent > 0). Misuse,
// such as a value in an object without a key, throws Error.
class Writer {
 public:
  explicit Writer(int indent = 0) : indent_(indent) {}

  Writer& begin_object() { return open('{', true); }
  Writer& end_object() { return close('}', true); }
  Writer& begin_array() { return open('[', false); }
  Writer& end_array() { return close(']', false); }

  Writer& key(std::string_view k) {
    require(!stack_.empty() && stack_.back().is_object && !have_key_, "json::Writer: key outside an object or twice in a row");
    separate();
    out_ += quote(k);
    out_ += indent_ > 0 ? ": " : ":";
    have_key_ = true;
    return *this;
  }

  Writer& null() { return raw("null"); }
  Writer& value(bool b) { return raw(b ? "true" : "false"); }
  Writer& value(double d) { return raw(format_number(d)); }
  Writer& value(float f) { return raw(format_number(static_cast<double>(f))); }
  Writer& value(std::string_view s) { return raw(quote(s)); }
  Writer& value(const char* s) { return raw(quote(s)); }
  Writer& value(const std::string& s) { return raw(quote(s)); }
  template <class T>
    requires(std::is_integral_v<T> && !std::is_same_v<T, bool>)
  Writer& value(T i) {
    return raw(std::to_string(i));
  }
  Writer& value(const Value& v) {
    switch (v.type()) {
      case Type::Null: return null();
      case Type::Bool: return value(v.as_bool());
      case Type::Number: return v.is_integer() ? value(v.as_int64()) : value(v.as_double());
      case Type::String: return value(v.as_string());
      case Type::Array:
        begin_array();
        for (const Value& item : v.as_array()) value(item);
        return end_array();
      case Type::Object:
        begin_object();
        for (const auto& [k, item] : v.as_object()) key(k).value(item);
        return end_object();
    }
    return *this;
  }
  // Shorthand for key(k).value(v).
  template <class T>
  Writer& member(std::string_view k, const T& v) {
    return key(k).value(v);
  }

  // The text so far; complete once every array and object is closed.
  const std::string& str() const { return out_; }
  bool complete() const { return stack_.empty() && wrote_root_; }

 private:
  struct Level {
    bool is_object;
    std::size_t count = 0;
  };

  void separate() {
    if (stack_.empty()) return;
    Level& level = stack_.back();
    if (level.count++ > 0) out_ += ',';
    newline();
  }
  void newline() {
    if (indent_ <= 0) return;
    out_ += '\n';
    out_.append(stack_.size() * static_cast<std::size_t>(indent_), ' ');
  }
  void before_value() {
    if (stack_.empty()) {
      require(!wrote_root_, "json::Writer: a second top-level value");
      wrote_root_ = true;
      return;
    }
    if (stack_.back().is_object) {
      require(have_key_, "json::Writer: a value in an object needs a key first");
      have_key_ = false;
    } else {
      separate();
    }
  }
  Writer& raw(const std::string& text) {
    before_value();
    out_ += text;
    return *this;
  }
  Writer& open(char bracket, bool is_object) {
    before_value();
    out_ += bracket;
    stack_.push_back({is_object});
    return *this;
  }
  Writer& close(char bracket, bool is_object) {
    require(!stack_.empty() && stack_.back().is_object == is_object && !have_key_,
            "json::Writer: mismatched ", bracket);
    const bool had_members = stack_.back().count > 0;
    stack_.pop_back();
    if (had_members) newline();
    out_ += bracket;
    return *this;
  }

  int indent_;
  std::string out_;
  std::vector<Level> stack_;
  bool have_key_ = false;
  bool wrote_root_ = false;
};

// The value as JSON text (compact when indent is 0).
inline std::string dump(const Value& v, int indent = 0) {
  Writer w(indent);
  w.value(v);
  return w.str();
}

}  // namespace focuspatch::json
