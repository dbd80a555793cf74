#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "focuspatch/io/mapped_file.hpp"
#include "focuspatch/io/pickle.hpp"
#include "focuspatch/io/zip_archive.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
using pickle::Kind;

namespace {
using test::file_bytes;
std::string fixture(const std::string& name) { return test::reader_fixture(name); }

std::vector<std::byte> bytes_of(std::string_view s) {
  std::vector<std::byte> out(s.size());
  if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
  return out;
}

// A string literal with its embedded NUL bytes.
template <std::size_t N>
std::string lit(const char (&s)[N]) {
  return std::string(s, N - 1);
}

pickle::Document run(std::string_view s, const pickle::Limits& limits = {}) {
  const auto b = bytes_of(s);
  return pickle::parse(b, "test.pkl", limits);
}

const pickle::Value& at(const pickle::Value& dict, std::string_view key) {
  const pickle::Value* v = dict.find(key);
  REQUIRE_MESSAGE(v != nullptr, "missing key ", key);
  return *v;
}
}  // namespace

TEST_CASE("CPython's pickles of one value read the same with protocols 2 to 5") {
  for (int proto = 2; proto <= 5; ++proto) {
    CAPTURE(proto);
    const auto bytes = file_bytes(fixture("plain_p" + std::to_string(proto) + ".pkl"));
    const auto doc = pickle::parse(bytes, "plain.pkl");
    CHECK(doc.end_offset() == bytes.size());
    const auto& root = doc.root();
    REQUIRE(root.kind == Kind::Dict);
    REQUIRE(root.entries.size() == 20);
    CHECK(root.entries.front().first->text == "int");  // file order kept
    CHECK(root.entries.back().first->text == "int_key");

    CHECK(at(root, "int").integer == 1);
    CHECK(at(root, "neg").integer == -300);
    CHECK(at(root, "big").integer == (std::int64_t{1} << 40));
    CHECK(at(root, "min").integer == std::numeric_limits<std::int64_t>::min());
    CHECK(at(root, "float").real == 1.5);
    CHECK(at(root, "tiny").real == -2.5e-300);
    CHECK(at(root, "str").text == "h\xC3\xA9llo \xE2\x9C\x93 \xF0\x9F\x98\x80");
    CHECK(at(root, "long_str").text == std::string(300, 'x'));

    const auto& bytes_value = at(root, "bytes");
    if (proto == 2) {
      // Protocol 2 has no bytes opcode: CPython writes _codecs.encode('\x00\x01\xff', 'latin1').
      CHECK(bytes_value.is_call_to("_codecs", "encode"));
      CHECK(bytes_value.args->items.at(0)->text == lit("\x00\x01\xC3\xBF"));
    } else {
      CHECK(bytes_value.kind == Kind::Bytes);
      CHECK(bytes_value.text == lit("\x00\x01\xff"));
    }

    const auto& list = at(root, "list");
    REQUIRE(list.kind == Kind::List);
    REQUIRE(list.items.size() == 3);
    CHECK(list.items[2]->integer == 3);
    const auto& tuple = at(root, "tuple");
    REQUIRE(tuple.kind == Kind::Tuple);
    REQUIRE(tuple.items.size() == 3);
    CHECK(tuple.items[1]->text == "a");
    CHECK(tuple.items[2]->is_none());
    const auto& nested = at(at(root, "nested"), "a");
    REQUIRE(nested.items.size() == 2);
    CHECK(nested.items[0]->boolean == true);
    CHECK(nested.items[1]->boolean == false);
    CHECK(at(root, "empty").kind == Kind::List);
    CHECK(at(root, "empty").items.empty());
    CHECK(at(root, "etuple").kind == Kind::Tuple);

    const auto& set = at(root, "set");
    const auto& frozen = at(root, "frozen");
    if (proto < 4) {
      CHECK(set.is_call_to("__builtin__", "set") != set.is_call_to("builtins", "set"));
      CHECK(set.args->items.at(0)->items.at(0)->integer == 7);
      CHECK(frozen.args->items.at(0)->items.at(0)->integer == 8);
    } else {
      REQUIRE(set.kind == Kind::Set);
      CHECK(set.items.at(0)->integer == 7);
      REQUIRE(frozen.kind == Kind::Set);
      CHECK(frozen.items.at(0)->integer == 8);
    }
    // The memo makes both keys refer to one list, as in Python.
    CHECK(&at(root, "shared") == &at(root, "shared_again"));
    CHECK(at(root, "shared").items.size() == 2);
    // OrderedDict() becomes a plain dict with its items.
    const auto& odict = at(root, "odict");
    REQUIRE(odict.kind == Kind::Dict);
    CHECK(at(odict, "a").integer == 1);
    const auto& int_key = at(root, "int_key");
    REQUIRE(int_key.entries.size() == 1);
    CHECK(int_key.entries[0].first->integer == 3);
    CHECK(int_key.entries[0].second->text == "three");
  }
}

TEST_CASE("a torch.save pickle shows the rebuild calls and persistent storage ids, unexecuted") {
  MappedFile file(fixture("torch_state.pt"));
  ZipArchive zip(file.bytes(), file.path());
  const auto data = zip.read("torch_state/data.pkl");
  const auto doc = pickle::parse(data.bytes(), "torch_state/data.pkl");
  const auto& root = doc.root();
  REQUIRE(root.kind == Kind::Dict);
  CHECK(root.entries.size() == 13);
  // OrderedDict state (the _metadata attribute) arrives through BUILD.
  REQUIRE(root.state != nullptr);
  CHECK(root.state->find("_metadata") != nullptr);

  const auto& t = at(root, "w_f32");
  REQUIRE(t.is_call_to("torch._utils", "_rebuild_tensor_v2"));
  const auto& args = t.args->items;
  REQUIRE(args.size() == 6);
  REQUIRE(args[0]->kind == Kind::PersistentId);
  const auto& pid = *args[0]->items.at(0);
  REQUIRE(pid.kind == Kind::Tuple);
  REQUIRE(pid.items.size() == 5);
  CHECK(pid.items[0]->text == "storage");
  CHECK(pid.items[1]->is_global("torch", "FloatStorage"));
  CHECK(pid.items[3]->text == "cpu");
  CHECK(pid.items[4]->integer == 12);
  CHECK(args[2]->items.size() == 2);  // size (3, 4)
  CHECK(args[2]->items[1]->integer == 4);
  CHECK(args[3]->items[0]->integer == 4);  // stride (4, 1)
  CHECK(at(root, "param").is_call_to("torch._utils", "_rebuild_parameter"));
  CHECK(pickle::repr(t).rfind("torch._utils._rebuild_tensor_v2(persistent_id(('storage', torch.FloatStorage", 0) == 0);
}

TEST_CASE("hand-written opcode sequences") {
  SUBCASE("text opcodes") {
    const auto doc = run("(I1\nI-2\nL12345678901L\nF0.25\nI01\nI00\nlp0\n0g0\n.");
    const auto& l = doc.root();
    REQUIRE(l.kind == Kind::List);
    REQUIRE(l.items.size() == 6);
    CHECK(l.items[0]->integer == 1);
    CHECK(l.items[1]->integer == -2);
    CHECK(l.items[2]->integer == 12345678901);
    CHECK(l.items[3]->real == 0.25);
    CHECK(l.items[4]->boolean == true);
    CHECK(l.items[5]->boolean == false);
  }
  SUBCASE("LONG1 sign extension") {
    const auto doc = run(lit("\x80\x02(\x8a\x01\xff\x8a\x02\x00\xff\x8a\x00\x8a\x02\xff\x7f\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7ft."));
    const auto& t = doc.root();
    REQUIRE(t.items.size() == 5);
    CHECK(t.items[0]->integer == -1);
    CHECK(t.items[1]->integer == -256);
    CHECK(t.items[2]->integer == 0);
    CHECK(t.items[3]->integer == 32767);
    CHECK(t.items[4]->integer == std::numeric_limits<std::int64_t>::max());
  }
  SUBCASE("dict building, DUP, POP_MARK, STACK_GLOBAL, NEWOBJ and BUILD") {
    // (K1 K2 d -> {1: 2}; DUP; POP; then an object: cls = STACK_GLOBAL('m', 'C'), NEWOBJ(()), BUILD({'x': 3})
    const std::string s = lit("\x80\x04(K\x01K\x02" "d" "2" "0" "(K\x09" "1") +
                          "\x8c\x01m\x8c\x01" "C\x93)\x81}\x8c\x01xK\x03sb" "\x86.";
    const auto doc = run(s);
    const auto& pair = doc.root();
    REQUIRE(pair.kind == Kind::Tuple);
    REQUIRE(pair.items.size() == 2);
    const auto& d = *pair.items[0];
    REQUIRE(d.kind == Kind::Dict);
    CHECK(d.entries.at(0).first->integer == 1);
    CHECK(d.entries.at(0).second->integer == 2);
    const auto& obj = *pair.items[1];
    REQUIRE(obj.kind == Kind::Object);
    CHECK(obj.callable->is_global("m", "C"));
    CHECK(obj.args->items.empty());
    REQUIRE(obj.state != nullptr);
    CHECK(at(*obj.state, "x").integer == 3);
  }
  SUBCASE("a list that contains itself is representable and printable") {
    const auto doc = run(lit("\x80\x02]q\x00h\x00" "a."));
    const auto& l = doc.root();
    REQUIRE(l.items.size() == 1);
    CHECK(l.items[0] == &l);
    CHECK(pickle::repr(l).find("...") != std::string::npos);
  }
  SUBCASE("deep nesting costs no recursion") {
    std::string s = "\x80\x02)";
    for (int i = 0; i < 200000; ++i) s += "\x85";
    s += ".";
    const auto doc = run(s);
    CHECK(pickle::repr(doc.root(), 40, 4) == "((((...))))");
  }
}

TEST_CASE("malformed pickles fail with the opcode and offset named") {
  auto fails_with = [](std::string_view s, const char* message) {
    CAPTURE(message);
    CHECK_THROWS_WITH_AS(run(s), doctest::Contains(message), Error);
  };
  fails_with("\x80\x02\xff.", "test.pkl: pickle opcode (0xff) at byte 2: unknown opcode");
  fails_with("\x80\x02.", "pickle opcode STOP (0x2e) at byte 2: stack underflow");
  fails_with("\x80\x02h\x05.", "memo index 5 was never stored");
  fails_with("\x80\x02K\x01t.", "no MARK on the stack");
  fails_with("\x80\x02K\x01(.", "stack underflow");  // STOP cannot reach below the MARK
  fails_with(lit("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00."), "does not fit in 64 bits");
  fails_with("\x80\x02X\xff\xff\xff\xff", "BINUNICODE (0x58) at byte 2: needs 4294967295 more bytes");
  fails_with("\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\x7f", "frame of");
  fails_with("\x80\x06", "protocol 6 is newer");
  fails_with("\x80\x02]K\x01" "b.", "BUILD on a list");
  fails_with("\x80\x02" "cos\nsystem\nK\x01R.", "REDUCE arguments are a int, not a tuple");
  fails_with("\x80\x04K\x01K\x02\x93.", "STACK_GLOBAL needs two strings");
  fails_with("\x80\x02K\x03K\x01K\x02s.", "cannot set items on a int");
  fails_with("\x80\x02}K\x01" "a.", "cannot append to a dict");
  fails_with("\x80\x02K\x01", "without a STOP opcode");
  fails_with("\x80\x02" "cos\nsys", "unterminated text argument");
  fails_with("\x80\x05\x97.", "out-of-band buffers");
  fails_with("\x80\x02\x82\x01.", "extension registry");
  fails_with("(S'abc'\nl.", "quoted strings are not supported");
  fails_with("(i__main__\nC\n.", "old-style class");
  fails_with("", "without a STOP opcode");
}

TEST_CASE("limits on values and memo size are enforced") {
  std::string many = "\x80\x02(";
  for (int i = 0; i < 50; ++i) many += "K\x01";
  many += "l.";
  pickle::Limits small;
  small.max_values = 20;
  CHECK_THROWS_WITH_AS(run(many, small), doctest::Contains("more than 20 values"), Error);
  CHECK_NOTHROW(run(many));

  std::string memo = "\x80\x02N";
  for (int i = 0; i < 50; ++i) {
    memo += 'q';
    memo += static_cast<char>(i);
  }
  memo += ".";
  pickle::Limits few;
  few.max_memo = 10;
  CHECK_THROWS_WITH_AS(run(memo, few), doctest::Contains("memo grows beyond 10"), Error);
  // DUP pushes without creating values; the stack has its own bound.
  pickle::Limits shallow;
  shallow.max_stack = 50;
  CHECK(run("\x80\x02(N" + std::string(100, '2') + "t.").root().items.size() == 101);
  CHECK_THROWS_WITH_AS(run("\x80\x02(N" + std::string(100, '2') + "t.", shallow), doctest::Contains("stack grows beyond 50"), Error);
  // Sparse memo indices up to 2^32 - 1 cost one entry each, not a table that large.
  CHECK(run("\x80\x02Nr\xff\xff\xff\xffj\xff\xff\xff\xff\x86.").root().items.size() == 2);
}

TEST_CASE("every truncation throws and bit flips never crash") {
  MappedFile file(fixture("torch_state.pt"));
  ZipArchive zip(file.bytes(), file.path());
  const auto data = zip.read("torch_state/data.pkl");
  const std::vector<std::byte> torch_pkl(data.bytes().begin(), data.bytes().end());
  for (const auto& original : {file_bytes(fixture("plain_p2.pkl")), file_bytes(fixture("plain_p5.pkl")), torch_pkl}) {
    for (std::size_t cut = 0; cut < original.size(); ++cut) {
      CAPTURE(cut);
      CHECK_THROWS_AS(pickle::parse(std::span(original).first(cut), "cut.pkl"), Error);
    }
    std::size_t ok = 0, bad = 0;
    for (std::size_t i = 0; i < original.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        auto b = original;
        b[i] ^= std::byte{static_cast<unsigned char>(1u << bit)};
        try {
          const auto doc = pickle::parse(b, "flipped.pkl");
          (void)pickle::repr(doc.root());
          ++ok;
        } catch (const Error&) {
          ++bad;
        }
      }
    }
    CHECK(ok > 0);
    CHECK(bad > 0);
  }
}
