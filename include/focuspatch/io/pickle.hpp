#pragma once
// A Python pickle reader that builds a value tree and never executes anything. PyTorch checkpoints
// describe their tensors in a pickle (data.pkl): calls such as
// torch._utils._rebuild_tensor_v2(...) become Object values naming the callable, its arguments and
// any BUILD state, and storages become PersistentId values; interpreting them is up to the caller
// (io/torch_archive.hpp). Covers the opcodes of protocols 0-5 that CPython and PyTorch emit for
// data (out-of-band buffers and the extension registry are refused). Values live in an arena owned
// by the Document and refer to each other by pointer, so shared and even cyclic references (which
// pickle allows) cost nothing; code that walks the tree bounds its own depth.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/little_endian.hpp"

namespace focuspatch::pickle {

enum class Kind : std::uint8_t {
  None,
  Bool,
  Int,
  Float,
  String,        // Python str (UTF-8 bytes as pickled)
  Bytes,         // bytes / bytearray
  List,
  Tuple,
  Set,           // set / frozenset
  Dict,          // dict, and collections.OrderedDict(), which REDUCE builds as a plain dict
  Global,        // a module-level name: module + name (GLOBAL, STACK_GLOBAL)
  Object,        // the result of REDUCE / NEWOBJ: callable + args, then BUILD state if any
  PersistentId,  // BINPERSID / PERSID: items[0] is the id the pickler wrote
};

inline std::string_view kind_name(Kind k) {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Set: return "set";
    case Kind::Dict: return "dict";
    case Kind::Global: return "global";
    case Kind::Object: return "object";
    case Kind::PersistentId: return "persistent id";
  }
  return "unknown";
}

struct Value {
  Kind kind = Kind::None;
  bool boolean = false;
  std::int64_t integer = 0;
  double real = 0.0;
  std::string text;    // String / Bytes contents; Global: the module
  std::string name;    // Global: the attribute name
  std::vector<const Value*> items;                             // List / Tuple / Set; Object: APPENDed items; PersistentId: [id]
  std::vector<std::pair<const Value*, const Value*>> entries;  // Dict (file order); Object: SETITEMs
  const Value* callable = nullptr;                             // Object
  const Value* args = nullptr;                                 // Object: the argument tuple
  const Value* kwargs = nullptr;                               // Object made by NEWOBJ_EX
  const Value* state = nullptr;                                // Object / Dict: the BUILD state

  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_int() const { return kind == Kind::Int; }
  bool is_sequence() const { return kind == Kind::Tuple || kind == Kind::List; }
  bool is_global(std::string_view module, std::string_view attr) const {
    return kind == Kind::Global && text == module && name == attr;
  }
  // For an Object: whether its callable is the given global.
  bool is_call_to(std::string_view module, std::string_view attr) const {
    return kind == Kind::Object && callable && callable->is_global(module, attr);
  }
  // Dict lookup by string key (linear: pickled dicts that are searched are small).
  const Value* find(std::string_view key) const {
    for (const auto& [k, v] : entries)
      if (k->kind == Kind::String && k->text == key) return v;
    return nullptr;
  }
  // "module.name" for a Global.
  std::string qualified_name() const { return text + "." + name; }
};

struct Limits {
  std::size_t max_values = std::size_t{1} << 23;  // values created; each costs ~200 bytes
  std::size_t max_memo = std::size_t{1} << 23;    // memo entries
  std::size_t max_stack = std::size_t{1} << 22;   // stack entries (DUP and GET push without creating values)
  std::size_t max_depth = 512;                    // for walks over the tree (repr, consumers)
};

class Document {
 public:
  const Value& root() const { return *root_; }
  std::size_t value_count() const { return arena_.size(); }
  std::size_t end_offset() const { return end_; }  // just past the STOP opcode

 private:
  friend Document parse(std::span<const std::byte>, std::string_view, const Limits&);
  std::deque<Value> arena_;
  const Value* root_ = nullptr;
  std::size_t end_ = 0;
};

// A short Python-like rendering of a value for error messages: depth- and length-limited.
inline std::string repr(const Value& v, std::size_t max_chars = 120, std::size_t max_depth = 6);

namespace detail {

inline std::string_view opcode_name(std::uint8_t op) {
  switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    default: return "";
  }
}

class Machine {
 public:
  Machine(std::span<const std::byte> bytes, std::string_view what, const Limits& limits, std::deque<Value>& arena)
      : bytes_(bytes), what_(what), limits_(limits), arena_(arena) {}

  // Runs to STOP; returns the result and the offset just past STOP.
  std::pair<const Value*, std::size_t> run() {
    none_ = make(Kind::None);
    true_ = make(Kind::Bool);
    true_->boolean = true;
    false_ = make(Kind::Bool);
    while (true) {
      require(pos_ < bytes_.size(), what_, ": pickle ends at byte ", pos_, " without a STOP opcode (truncated)");
      op_at_ = pos_;
      op_ = static_cast<std::uint8_t>(bytes_[pos_++]);
      if (step()) break;
    }
    return {result_, pos_};
  }

 private:
  [[noreturn]] void error(std::string_view message) const {
    const std::string_view name = opcode_name(op_);
    fail(what_, ": pickle opcode ", name.empty() ? "" : name, name.empty() ? "" : " ", "(0x", hex(op_), ") at byte ",
         op_at_, ": ", message);
  }
  static std::string hex(std::uint8_t b) {
    static const char* digits = "0123456789abcdef";
    return {digits[b >> 4], digits[b & 15]};
  }

  // ---- input --------------------------------------------------------------------------------
  const std::byte* take(std::uint64_t n) {
    if (n > bytes_.size() - pos_)
      error("needs " + std::to_string(n) + " more bytes but the pickle has " + std::to_string(bytes_.size() - pos_) +
            " left (truncated or corrupt)");
    const std::byte* p = bytes_.data() + pos_;
    pos_ += static_cast<std::size_t>(n);
    return p;
  }
  template <class T>
  T read() {
    return load_le<T>(take(sizeof(T)));
  }
  std::string_view read_line() {
    const std::size_t start = pos_;
    while (pos_ < bytes_.size() && bytes_[pos_] != std::byte{'\n'}) ++pos_;
    if (pos_ >= bytes_.size()) error("unterminated text argument (truncated)");
    const std::string_view line(reinterpret_cast<const char*>(bytes_.data()) + start, pos_ - start);
    ++pos_;
    return line;
  }
  std::string read_text(std::uint64_t n) {
    const std::byte* p = take(n);
    return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
  }

  // ---- values -------------------------------------------------------------------------------
  Value* make(Kind k) {
    if (arena_.size() >= limits_.max_values) error("pickle creates more than " + std::to_string(limits_.max_values) + " values");
    arena_.emplace_back();
    arena_.back().kind = k;
    return &arena_.back();
  }
  Value* make_int(std::int64_t i) {
    Value* v = make(Kind::Int);
    v->integer = i;
    return v;
  }
  Value* make_text(Kind k, std::string s) {
    Value* v = make(k);
    v->text = std::move(s);
    return v;
  }

  // ---- stack --------------------------------------------------------------------------------
  void push(Value* v) {
    if (stack_.size() >= limits_.max_stack) error("stack grows beyond " + std::to_string(limits_.max_stack) + " entries");
    stack_.push_back(v);
  }
  Value* pop() {
    if (stack_.size() <= floor()) error("stack underflow (the pickle is corrupt)");
    Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Value* top() {
    if (stack_.size() <= floor()) error("stack underflow (the pickle is corrupt)");
    return stack_.back();
  }
  // Values above the topmost MARK belong to it; below it they are out of reach.
  std::size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<Value*> pop_mark() {
    if (marks_.empty()) error("no MARK on the stack (the pickle is corrupt)");
    const std::size_t at = marks_.back();
    marks_.pop_back();
    std::vector<Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(at), stack_.end());
    stack_.resize(at);
    return items;
  }
  static std::vector<const Value*> as_const(const std::vector<Value*>& v) { return {v.begin(), v.end()}; }

  void memo_put(std::uint64_t index, Value* v) {
    if (memo_.size() >= limits_.max_memo && !memo_.count(index))
      error("memo grows beyond " + std::to_string(limits_.max_memo) + " entries");
    memo_[index] = v;
  }
  Value* memo_get(std::uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) error("memo index " + std::to_string(index) + " was never stored (the pickle is corrupt)");
    return it->second;
  }

  std::int64_t parse_decimal(std::string_view s) {
    if (!s.empty() && s.back() == 'L') s.remove_suffix(1);  // protocol 0 longs
    std::int64_t v = 0;
    const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc() || r.ptr != s.data() + s.size() || s.empty())
      error("invalid or out-of-range integer '" + std::string(s.substr(0, 40)) + "'");
    return v;
  }

  // Python ints of LONG1/LONG4: little-endian two's complement of n bytes; we keep those that fit
  // in 64 bits.
  Value* read_long(std::uint64_t n) {
    if (n > 8) {
      take(n);  // validates the length before complaining about the size
      error("integer of " + std::to_string(n) + " bytes does not fit in 64 bits");
    }
    const std::byte* p = take(n);
    std::uint64_t u = 0;
    for (std::uint64_t i = 0; i < n; ++i) u |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    if (n > 0 && n < 8 && (static_cast<std::uint8_t>(p[n - 1]) & 0x80)) u |= ~std::uint64_t{0} << (8 * n);
    return make_int(static_cast<std::int64_t>(u));
  }

  void append_to(Value* target, const std::vector<Value*>& items) {
    if (target->kind == Kind::List || target->kind == Kind::Object) {
      target->items.insert(target->items.end(), items.begin(), items.end());
      return;
    }
    error("cannot append to a " + std::string(kind_name(target->kind)));
  }
  void set_items(Value* target, const std::vector<Value*>& kv) {
    if (kv.size() % 2 != 0) error("odd number of items for SETITEMS");
    if (target->kind != Kind::Dict && target->kind != Kind::Object)
      error("cannot set items on a " + std::string(kind_name(target->kind)));
    for (std::size_t i = 0; i < kv.size(); i += 2) target->entries.emplace_back(kv[i], kv[i + 1]);
  }
  void add_to_set(Value* target, const std::vector<Value*>& items) {
    if (target->kind != Kind::Set) error("cannot add items to a " + std::string(kind_name(target->kind)));
    target->items.insert(target->items.end(), items.begin(), items.end());
  }
  Value* make_sequence(Kind k, std::vector<Value*> items) {
    Value* v = make(k);
    v->items = as_const(items);
    return v;
  }
  Value* make_global(std::string module, std::string attr) {
    if (module.empty() || attr.empty()) error("empty module or attribute name in a global reference");
    Value* v = make(Kind::Global);
    v->text = std::move(module);
    v->name = std::move(attr);
    return v;
  }

  // Executes one opcode; true at STOP.
  bool step() {
    switch (op_) {
      // -- framing and protocol
      case 0x80: {  // PROTO
        const auto proto = read<std::uint8_t>();
        if (proto > 5) error("protocol " + std::to_string(proto) + " is newer than this reader understands (at most 5)");
        return false;
      }
      case 0x95: {  // FRAME: a length hint; the frame must lie within the input
        const auto n = read<std::uint64_t>();
        if (n > bytes_.size() - pos_) error("frame of " + std::to_string(n) + " bytes runs past the end of the pickle (truncated)");
        return false;
      }
      case '.':  // STOP
        result_ = pop();
        return true;

      // -- stack manipulation
      case '(': marks_.push_back(stack_.size()); return false;
      case '0': pop(); return false;
      case '1': pop_mark(); return false;
      case '2': push(top()); return false;

      // -- memo
      case 'p': memo_put(static_cast<std::uint64_t>(parse_decimal(read_line())), top()); return false;
      case 'q': memo_put(read<std::uint8_t>(), top()); return false;
      case 'r': memo_put(read<std::uint32_t>(), top()); return false;
      case 0x94: memo_put(memo_.size(), top()); return false;
      case 'g': push(memo_get(static_cast<std::uint64_t>(parse_decimal(read_line())))); return false;
      case 'h': push(memo_get(read<std::uint8_t>())); return false;
      case 'j': push(memo_get(read<std::uint32_t>())); return false;

      // -- scalars
      case 'N': push(none_); return false;
      case 0x88: push(true_); return false;
      case 0x89: push(false_); return false;
      case 'I': {
        const std::string_view line = read_line();
        if (line == "00") push(false_);  // protocol 0 writes booleans as INT 00 / 01
        else if (line == "01") push(true_);
        else push(make_int(parse_decimal(line)));
        return false;
      }
      case 'L': push(make_int(parse_decimal(read_line()))); return false;
      case 'J': push(make_int(read<std::int32_t>())); return false;
      case 'K': push(make_int(read<std::uint8_t>())); return false;
      case 'M': push(make_int(read<std::uint16_t>())); return false;
      case 0x8a: push(read_long(read<std::uint8_t>())); return false;
      case 0x8b: {
        const auto n = read<std::int32_t>();
        if (n < 0) error("negative length");
        push(read_long(static_cast<std::uint64_t>(n)));
        return false;
      }
      case 'G': {  // BINFLOAT is big-endian
        const std::byte* p = take(8);
        std::uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | static_cast<std::uint64_t>(p[i]);
        Value* v = make(Kind::Float);
        std::memcpy(&v->real, &bits, sizeof(bits));
        push(v);
        return false;
      }
      case 'F': {
        const std::string_view line = read_line();
        double d = 0.0;
        const auto r = std::from_chars(line.data(), line.data() + line.size(), d);
        if (r.ec != std::errc() || r.ptr != line.data() + line.size()) error("invalid float '" + std::string(line.substr(0, 40)) + "'");
        Value* v = make(Kind::Float);
        v->real = d;
        push(v);
        return false;
      }

      // -- strings and bytes
      case 'X': push(make_text(Kind::String, read_text(read<std::uint32_t>()))); return false;
      case 0x8c: push(make_text(Kind::String, read_text(read<std::uint8_t>()))); return false;
      case 0x8d: push(make_text(Kind::String, read_text(read<std::uint64_t>()))); return false;
      case 'T': {
        const auto n = read<std::int32_t>();
        if (n < 0) error("negative length");
        push(make_text(Kind::String, read_text(static_cast<std::uint64_t>(n))));
        return false;
      }
      case 'U': push(make_text(Kind::String, read_text(read<std::uint8_t>()))); return false;
      case 'B': push(make_text(Kind::Bytes, read_text(read<std::uint32_t>()))); return false;
      case 'C': push(make_text(Kind::Bytes, read_text(read<std::uint8_t>()))); return false;
      case 0x8e: push(make_text(Kind::Bytes, read_text(read<std::uint64_t>()))); return false;
      case 0x96: push(make_text(Kind::Bytes, read_text(read<std::uint64_t>()))); return false;

      // -- containers
      case ')': push(make(Kind::Tuple)); return false;
      case ']': push(make(Kind::List)); return false;
      case '}': push(make(Kind::Dict)); return false;
      case 0x8f: push(make(Kind::Set)); return false;
      case 't': push(make_sequence(Kind::Tuple, pop_mark())); return false;
      case 'l': push(make_sequence(Kind::List, pop_mark())); return false;
      case 0x91: push(make_sequence(Kind::Set, pop_mark())); return false;
      case 0x85: {
        Value* a = pop();
        push(make_sequence(Kind::Tuple, {a}));
        return false;
      }
      case 0x86: {
        Value* b = pop();
        Value* a = pop();
        push(make_sequence(Kind::Tuple, {a, b}));
        return false;
      }
      case 0x87: {
        Value* c = pop();
        Value* b = pop();
        Value* a = pop();
        push(make_sequence(Kind::Tuple, {a, b, c}));
        return false;
      }
      case 'd': {
        auto kv = pop_mark();
        Value* d = make(Kind::Dict);
        set_items(d, kv);
        push(d);
        return false;
      }
      case 'a': {
        Value* item = pop();
        append_to(top(), {item});
        return false;
      }
      case 'e': {
        auto items = pop_mark();
        append_to(top(), items);
        return false;
      }
      case 's': {
        Value* v = pop();
        Value* k = pop();
        set_items(top(), {k, v});
        return false;
      }
      case 'u': {
        auto kv = pop_mark();
        set_items(top(), kv);
        return false;
      }
      case 0x90: {
        auto items = pop_mark();
        add_to_set(top(), items);
        return false;
      }

      // -- references to code: recorded, never resolved or called
      case 'c': {
        std::string module(read_line());
        std::string attr(read_line());
        push(make_global(std::move(module), std::move(attr)));
        return false;
      }
      case 0x93: {
        Value* attr = pop();
        Value* module = pop();
        if (attr->kind != Kind::String || module->kind != Kind::String) error("STACK_GLOBAL needs two strings");
        push(make_global(module->text, attr->text));
        return false;
      }
      case 'R': {
        Value* args = pop();
        Value* callable = pop();
        if (args->kind != Kind::Tuple) error("REDUCE arguments are a " + std::string(kind_name(args->kind)) + ", not a tuple");
        // OrderedDict() is how PyTorch pickles state dicts; as a plain dict its SETITEMS and BUILD
        // land where readers look for them.
        if (callable->is_global("collections", "OrderedDict") && args->items.empty()) {
          push(make(Kind::Dict));
          return false;
        }
        Value* obj = make(Kind::Object);
        obj->callable = callable;
        obj->args = args;
        push(obj);
        return false;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        Value* args = pop();
        Value* cls = pop();
        if (args->kind != Kind::Tuple) error("NEWOBJ arguments are a " + std::string(kind_name(args->kind)) + ", not a tuple");
        Value* obj = make(Kind::Object);
        obj->callable = cls;
        obj->args = args;
        push(obj);
        return false;
      }
      case 0x92: {  // NEWOBJ_EX: cls.__new__(cls, *args, **kwargs)
        Value* kwargs = pop();
        Value* args = pop();
        Value* cls = pop();
        if (args->kind != Kind::Tuple || kwargs->kind != Kind::Dict) error("NEWOBJ_EX needs a tuple and a dict");
        Value* obj = make(Kind::Object);
        obj->callable = cls;
        obj->args = args;
        obj->kwargs = kwargs;
        push(obj);
        return false;
      }
      case 'b': {
        Value* state = pop();
        Value* target = top();
        if (target->kind != Kind::Object && target->kind != Kind::Dict)
          error("BUILD on a " + std::string(kind_name(target->kind)));
        if (target->state && target->state->kind == Kind::Dict && state->kind == Kind::Dict) {
          // A second BUILD updates the first one's attribute dict (as __dict__.update would). The
          // merged dict is this object's own (never on the stack or in the memo), so later BUILDs
          // extend it in place; and as a memoized state dict can be merged again and again at 3
          // bytes a time, the entries merged count against the value limit. Otherwise a few KB of
          // repeated BUILDs could demand gigabytes.
          auto own = merged_states_.find(target->state);
          Value* merged = own != merged_states_.end() ? own->second : nullptr;
          merged_entries_ += state->entries.size() + (merged ? 0 : target->state->entries.size());
          if (merged_entries_ > limits_.max_values)
            error("BUILD merges more than " + std::to_string(limits_.max_values) + " state entries");
          if (!merged) {
            merged = make(Kind::Dict);
            merged->entries = target->state->entries;
            merged_states_.emplace(merged, merged);
          }
          merged->entries.insert(merged->entries.end(), state->entries.begin(), state->entries.end());
          target->state = merged;
        } else {
          target->state = state;
        }
        return false;
      }
      case 'Q': {
        Value* pid = pop();
        Value* v = make(Kind::PersistentId);
        v->items.push_back(pid);
        push(v);
        return false;
      }
      case 'P': {
        Value* v = make(Kind::PersistentId);
        v->items.push_back(make_text(Kind::String, std::string(read_line())));
        push(v);
        return false;
      }

      // -- refused: they need Python objects or state we do not have
      case 'i': case 'o': error("old-style class instantiation is not supported");
      case 0x82: case 0x83: case 0x84: error("the copyreg extension registry is not supported");
      case 0x97: case 0x98: error("out-of-band buffers (protocol 5) are not supported");
      case 'S': case 'V': error("protocol 0 quoted strings are not supported");
      default: error("unknown opcode; the data is not a pickle or is corrupt");
    }
  }

  std::span<const std::byte> bytes_;
  std::string_view what_;
  const Limits& limits_;
  std::deque<Value>& arena_;
  std::size_t pos_ = 0;
  std::size_t op_at_ = 0;
  std::uint8_t op_ = 0;
  std::vector<Value*> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<std::uint64_t, Value*> memo_;
  std::unordered_map<const Value*, Value*> merged_states_;  // dicts made by BUILD merges, each owned by one object
  std::size_t merged_entries_ = 0;
  Value* none_ = nullptr;
  Value* true_ = nullptr;
  Value* false_ = nullptr;
  const Value* result_ = nullptr;
};

inline void repr_into(std::string& out, const Value& v, std::size_t max_chars, std::size_t depth) {
  if (out.size() > max_chars) return;
  if (depth == 0) {
    out += "...";
    return;
  }
  auto seq = [&](const std::vector<const Value*>& items, const char* open, const char* close) {
    out += open;
    for (std::size_t i = 0; i < items.size() && out.size() <= max_chars; ++i) {
      if (i) out += ", ";
      repr_into(out, *items[i], max_chars, depth - 1);
    }
    out += close;
  };
  switch (v.kind) {
    case Kind::None: out += "None"; break;
    case Kind::Bool: out += v.boolean ? "True" : "False"; break;
    case Kind::Int: out += std::to_string(v.integer); break;
    case Kind::Float: out += std::to_string(v.real); break;
    case Kind::String: out += "'" + v.text.substr(0, 60) + (v.text.size() > 60 ? "...'" : "'"); break;
    case Kind::Bytes: out += "b<" + std::to_string(v.text.size()) + " bytes>"; break;
    case Kind::List: seq(v.items, "[", "]"); break;
    case Kind::Tuple: seq(v.items, "(", ")"); break;
    case Kind::Set: seq(v.items, "{", "}"); break;
    case Kind::Dict:
      out += "{";
      for (std::size_t i = 0; i < v.entries.size() && out.size() <= max_chars; ++i) {
        if (i) out += ", ";
        repr_into(out, *v.entries[i].first, max_chars, depth - 1);
        out += ": ";
        repr_into(out, *v.entries[i].second, max_chars, depth - 1);
      }
      out += "}";
      break;
    case Kind::Global: out += v.qualified_name(); break;
    case Kind::Object:
      if (v.callable) repr_into(out, *v.callable, max_chars, depth - 1);
      if (v.args) repr_into(out, *v.args, max_chars, depth - 1);
      break;
    case Kind::PersistentId:
      out += "persistent_id";
      seq(v.items, "(", ")");
      break;
  }
}

}  // namespace detail

inline std::string repr(const Value& v, std::size_t max_chars, std::size_t max_depth) {
  std::string out;
  detail::repr_into(out, v, max_chars, max_depth);
  if (out.size() > max_chars) out = out.substr(0, max_chars) + "...";
  return out;
}

// Runs the pickle in `bytes` to its STOP opcode; `what` names it in errors
// ("model.pt: archive/data.pkl").
inline Document parse(std::span<const std::byte> bytes, std::string_view what, const Limits& limits = {}) {
  Document doc;
  detail::Machine machine(bytes, what, limits, doc.arena_);
  auto [root, end] = machine.run();
  doc.root_ = root;
  doc.end_ = end;
  return doc;
}

}  // namespace focuspatch::pickle
