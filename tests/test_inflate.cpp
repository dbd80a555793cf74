#include <doctest/doctest.h>

#include <algorithm>
#include <iterator>
#include <vector>

#include "focuspatch/io/inflate.hpp"
#include "focuspatch/io/mapped_file.hpp"
#include "test_paths.hpp"

using namespace focuspatch;

TEST_CASE("crc32 matches the standard check value") {
  const std::string s = "123456789";
  CHECK(crc32(std::as_bytes(std::span(s.data(), s.size()))) == 0xcbf43926u);
}

TEST_CASE("gunzip decodes CLIP's vocabulary file") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  MappedFile file(test::shared_vocab_path().string());
  const std::string text = gunzip(file.bytes(), file.path());
  CHECK(text.rfind("\"bpe_simple_vocab_16e6.txt#version: 0.2\n", 0) == 0);
  CHECK(std::count(text.begin(), text.end(), '\n') == 262145);

  SUBCASE("a flipped byte in the compressed data is reported, not decoded") {
    std::vector<std::byte> bytes(file.bytes().begin(), file.bytes().end());
    bytes[bytes.size() / 2] ^= std::byte{0x5a};
    CHECK_THROWS_AS(gunzip(bytes, "flipped.gz"), Error);
  }
  SUBCASE("a truncated file is reported") {
    std::vector<std::byte> bytes(file.bytes().begin(), file.bytes().begin() + 1000);
    CHECK_THROWS_AS(gunzip(bytes, "truncated.gz"), Error);
  }
}

TEST_CASE("gunzip refuses what is not gzip") {
  const std::string s = "this is plainly not a gzip file at all";
  CHECK_THROWS_WITH_AS(gunzip(std::as_bytes(std::span(s.data(), s.size())), "notes.txt"),
                       doctest::Contains("notes.txt: not a gzip file"), Error);
}

TEST_CASE("gunzip decodes a stream whose last code ends in its final bytes") {
  // Python's gzip.compress(b'3\n', mtime=0): the fixed-Huffman block ends two bytes before the trailer.
  const unsigned char gz[] = {0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x33, 0xe6,
                              0x02, 0x00, 0xd1, 0x9e, 0x67, 0x55, 0x02, 0x00, 0x00, 0x00};
  CHECK(gunzip(std::as_bytes(std::span(gz)), "three.gz") == "3\n");
}
