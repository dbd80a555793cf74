#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "focuspatch/io/checkpoint.hpp"
#include "focuspatch/io/safetensors.hpp"
#include "test_paths.hpp"

using namespace focuspatch;

namespace {
using test::file_bytes;
std::string fixture(const std::string& name) { return test::reader_fixture(name); }

// A safetensors file from a header and `data_size` bytes of data (byte i = i).
std::vector<std::byte> make(const std::string& header, std::size_t data_size, std::uint64_t claimed_length = ~0ull) {
  const std::uint64_t n = claimed_length == ~0ull ? header.size() : claimed_length;
  std::vector<std::byte> out(8 + header.size() + data_size);
  std::memcpy(out.data(), &n, 8);
  std::memcpy(out.data() + 8, header.data(), header.size());
  for (std::size_t i = 0; i < data_size; ++i) out[8 + header.size() + i] = static_cast<std::byte>(i);
  return out;
}

TensorArchive read(const std::string& header, std::size_t data_size) { return read_safetensors(make(header, data_size), "t.safetensors"); }

void fails(const std::string& header, std::size_t data_size, const char* message) {
  CAPTURE(header);
  CHECK_THROWS_WITH_AS(read(header, data_size), doctest::Contains(message), Error);
}
}  // namespace

TEST_CASE("a safetensors file with every dtype reads in place, in header order") {
  const auto a = read_safetensors(fixture("tensors.safetensors"));
  CHECK(a.format() == "safetensors");
  CHECK(a.names() == std::vector<std::string>{"f32", "f16", "bf16", "f64", "i64", "i32", "i16", "i8", "u8", "flags", "nothing"});
  REQUIRE(a.metadata().size() == 2);
  CHECK(*a.find_metadata("format") == "pt");
  CHECK(*a.find_metadata("note") == "h\xC3\xA9llo \xF0\x9F\x98\x80");

  const auto& f32 = a.get("f32");
  CHECK(f32.dtype == DType::F32);
  CHECK(f32.shape == Shape{2, 3});
  CHECK(f32.strides == std::vector<std::int64_t>{3, 1});
  CHECK(f32.is_contiguous());
  CHECK(f32.storage.data() >= a.file_bytes().data());
  CHECK(f32.storage.data() + f32.storage.size() <= a.file_bytes().data() + a.file_bytes().size());
  CHECK(f32.contiguous_bytes().size() == 24);
  auto values = [&](const std::string& n) {
    const FloatTensor t = a.load_float(n);
    return std::vector<float>(t.values().begin(), t.values().end());
  };
  CHECK(values("f32") == std::vector<float>{0, 0.5f, 1, 1.5f, 2, 2.5f});
  CHECK(values("f16") == std::vector<float>{-1, -0.75f, -0.5f, -0.25f});
  CHECK(a.get("bf16").dtype == DType::BF16);
  CHECK(values("bf16") == std::vector<float>{0, -2, -4, -6});
  CHECK(values("f64") == std::vector<float>{0, 0.125f, 0.25f});
  CHECK(a.load_int64("i64") == std::vector<std::int64_t>{-5, std::int64_t{1} << 40});
  CHECK(a.load_int64("i32") == std::vector<std::int64_t>{-7, 7});
  CHECK(a.load_int64("i16") == std::vector<std::int64_t>{-300, 300});
  CHECK(a.load_int64("i8") == std::vector<std::int64_t>{-8, 8});
  CHECK(a.load_int64("u8") == std::vector<std::int64_t>{0, 128, 255});
  CHECK(a.get("flags").dtype == DType::Bool);
  CHECK(a.load_int64("flags") == std::vector<std::int64_t>{1, 0});
  CHECK_THROWS_WITH_AS(a.load_float("i32"), doctest::Contains("tensor 'i32' has dtype i32"), Error);
  CHECK(a.get("nothing").shape == Shape{0, 4});
  CHECK(a.load_float("nothing").numel() == 0);
  CHECK_THROWS_WITH_AS(a.get("missing"), doctest::Contains("tensors.safetensors: tensor 'missing' is missing"), Error);

  const auto detected = open_checkpoint(fixture("tensors.safetensors"));
  CHECK(detected.format() == "safetensors");
  CHECK(detected.names() == a.names());
}

TEST_CASE("well-formed edge cases: no tensors, zero-size tensors, padded header") {
  CHECK(read("{}", 0).empty());
  CHECK(read("{\"__metadata__\": {}}   ", 0).empty());
  const auto a = read(R"({"z": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "s": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]}})", 1);
  CHECK(a.names() == std::vector<std::string>{"z", "s"});
  CHECK(a.get("s").shape.empty());
  CHECK(a.load_int64("s") == std::vector<std::int64_t>{0});
}

TEST_CASE("inconsistent headers are refused with the file and tensor named") {
  const std::string ok = R"("dtype": "F32", "shape": [2], "data_offsets": [0, 8])";
  fails("{\"a\": {" + ok + "}}", 9, "the last 1 data bytes belong to no tensor");
  fails("{\"a\": {" + ok + "}}", 4, "tensor 'a' has data_offsets [0, 8] beyond the 4 data bytes");
  fails(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8, "tensor 'a' has shape [3] of f32 but data_offsets span 8 bytes");
  fails(R"({"a": {"dtype": "F32", "shape": [1000000000000], "data_offsets": [0, 4]}})", 4, "data_offsets span 4 bytes");
  fails(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 4]}})", 4, "element count overflows");
  fails(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4, "not a non-negative integer");
  // No elements, so the count is 0, but the strides (products of the later dimensions) overflow.
  fails(R"({"a": {"dtype": "F32", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}})", 0, "strides overflow");
  fails(R"({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}})", 4, "not a non-negative integer");
  fails(R"({"a": {"dtype": "F8_E4M3", "shape": [4], "data_offsets": [0, 4]}})", 4, "tensor 'a' has dtype 'F8_E4M3', which is not supported");
  fails(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", 4, "invalid data_offsets");
  fails(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", 4, "no data_offsets pair");
  fails(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4, "no dtype string");
  fails(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", 4, "no shape array");
  fails(R"({"a": [1, 2]})", 4, "tensor 'a' is described by a JSON array");
  fails(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8,
        "overlaps another tensor");
  fails(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8, "data bytes 0..4 before tensor 'a' belong to no tensor");
  fails(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8,
        "has the key 'a' twice");
  fails(R"({"__metadata__": {"x": 1}})", 0, "__metadata__ entry 'x' is not a string");
  fails(R"({"__metadata__": [1]})", 0, "__metadata__ is not a JSON object");
  fails(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})", 4, "t.safetensors (safetensors header): invalid JSON at byte");
  fails(R"([])", 0, "does not start with '{'");
  fails(R"({"a": 1} garbage)", 0, "unexpected data after the JSON value");
}

TEST_CASE("header lengths that lie are refused") {
  const std::string header = R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  CHECK_NOTHROW(read_safetensors(make(header, 4), "x"));
  CHECK_THROWS_WITH_AS(read_safetensors(make(header, 4, 1ull << 62), "big"), doctest::Contains("big: safetensors header length 4611686018427387904 is larger than the format allows"), Error);
  CHECK_THROWS_WITH_AS(read_safetensors(make(header, 4, header.size() + 5), "long"), doctest::Contains("runs past the end"), Error);
  CHECK_THROWS_AS(read_safetensors(make(header, 4, header.size() - 1), "short"), Error);
  CHECK_THROWS_AS(read_safetensors(make(header, 4, 0), "zero"), Error);
  CHECK_THROWS_WITH_AS(read_safetensors(std::vector<std::byte>(5), "tiny"), doctest::Contains("tiny: too small to be a safetensors file"), Error);
  CHECK_THROWS_WITH_AS(read_safetensors(fixture("absent.safetensors")), doctest::Contains("cannot open"), Error);
  CHECK_THROWS_WITH_AS(open_checkpoint(fixture("plain_p2.pkl")), doctest::Contains("legacy PyTorch"), Error);
}

TEST_CASE("every truncation throws and bit flips never crash") {
  const auto original = file_bytes(fixture("tensors.safetensors"));
  REQUIRE_NOTHROW(read_safetensors(original, "s"));
  for (std::size_t cut = 0; cut < original.size(); ++cut) {
    CAPTURE(cut);
    CHECK_THROWS_AS(read_safetensors(std::vector<std::byte>(original.begin(), original.begin() + static_cast<std::ptrdiff_t>(cut)), "cut"), Error);
  }
  std::size_t ok = 0, bad = 0;
  for (std::size_t i = 0; i < original.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto b = original;
      b[i] ^= std::byte{static_cast<unsigned char>(1u << bit)};
      try {
        const auto a = read_safetensors(std::move(b), "flipped");
        for (const auto& t : a.tensors()) {
          if (t.is_floating()) (void)to_float_tensor(t, a.path());
          else (void)to_int64_values(t, a.path());
        }
        ++ok;
      } catch (const Error&) {
        ++bad;
      }
    }
  }
  CHECK(ok > 0);  // flips in tensor data cannot be detected: the format has no checksum
  CHECK(bad > 0);
}
