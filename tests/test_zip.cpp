#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "focuspatch/io/mapped_file.hpp"
#include "focuspatch/io/zip_archive.hpp"
#include "test_paths.hpp"

using namespace focuspatch;

namespace {
using test::file_bytes;
std::string fixture(const std::string& name) { return test::reader_fixture(name); }

std::string text_of(const ZipEntryData& d) { return std::string(d.text()); }

void put_u32(std::vector<std::byte>& b, std::size_t at, std::uint32_t v) { std::memcpy(b.data() + at, &v, 4); }
void put_u16(std::vector<std::byte>& b, std::size_t at, std::uint16_t v) { std::memcpy(b.data() + at, &v, 2); }

std::size_t find_sig(const std::vector<std::byte>& b, std::uint32_t sig) {
  for (std::size_t i = b.size() - 4; i-- > 0;) {
    std::uint32_t v;
    std::memcpy(&v, b.data() + i, 4);
    if (v == sig) return i;
  }
  FAIL("signature not found");
  return 0;
}

std::size_t first_central_header(const std::vector<std::byte>& b) {
  for (std::size_t i = 0; i + 4 <= b.size(); ++i) {
    std::uint32_t v;
    std::memcpy(&v, b.data() + i, 4);
    if (v == 0x02014b50) return i;
  }
  FAIL("no central directory header");
  return 0;
}

// Every entry's contents by name, read with CRC checks; throws Error on any problem.
std::map<std::string, std::string> read_all(std::span<const std::byte> bytes) {
  ZipArchive z(bytes, "mutated.zip");
  std::map<std::string, std::string> out;
  for (const auto& e : z.entries()) out[e.name] = text_of(z.read(e, true));
  return out;
}
}  // namespace

TEST_CASE("Python zipfile archive: stored, deflated, empty, directory and nested entries") {
  MappedFile file(fixture("plain.zip"));
  ZipArchive z(file.bytes(), file.path());
  std::vector<std::string> names;
  for (const auto& e : z.entries()) names.push_back(e.name);
  CHECK(names == std::vector<std::string>{"hello.txt", "stored.bin", "empty.txt", "dir/", "dir/nested name.txt"});

  const ZipEntry& hello = z.get("hello.txt");
  CHECK(hello.method == 8);
  CHECK(hello.compressed_size < hello.uncompressed_size);
  std::string expected;
  for (int i = 0; i < 50; ++i) expected += "hello zip\n";
  const auto hello_data = z.read(hello);
  CHECK(hello_data.is_owned());
  CHECK(text_of(hello_data) == expected);

  const auto stored = z.read("stored.bin", true);
  CHECK_FALSE(stored.is_owned());
  REQUIRE(stored.size() == 256);
  // Zero copy: the bytes are the mapping's own.
  CHECK(stored.bytes().data() >= file.data());
  CHECK(stored.bytes().data() + 256 <= file.data() + file.size());
  for (int i = 0; i < 256; ++i) CHECK(static_cast<int>(stored.bytes()[static_cast<std::size_t>(i)]) == i);

  CHECK(z.read("empty.txt", true).size() == 0);
  CHECK(z.get("dir/").is_directory());
  CHECK(text_of(z.read("dir/nested name.txt")) == "nested\n");
  CHECK(z.find("missing.txt") == nullptr);
  CHECK_THROWS_WITH_AS(z.get("missing.txt"), doctest::Contains("plain.zip: archive has no entry 'missing.txt'"), Error);
}

TEST_CASE("ZIP64 extra fields and end records are followed") {
  MappedFile file(fixture("zip64.zip"));
  ZipArchive z(file.bytes(), file.path());
  REQUIRE(z.entries().size() == 2);
  const ZipEntry& second = z.get("second.bin");
  CHECK(second.compressed_size == 40);
  CHECK(second.uncompressed_size == 40);
  CHECK(second.local_header_offset > 0);
  CHECK(text_of(z.read("first.txt", true)) == "first entry\n");
  const auto data = z.read(second, true);
  REQUIRE(data.size() == 40);
  for (std::size_t i = 0; i < 40; ++i) CHECK(static_cast<std::size_t>(data.bytes()[i]) == i);
}

TEST_CASE("PyTorch's archives: data descriptors, padded local headers, 64-byte aligned storages") {
  MappedFile file(fixture("torch_state.pt"));
  ZipArchive z(file.bytes(), file.path());
  const ZipEntry& pkl = z.get("torch_state/data.pkl");
  CHECK((pkl.flags & 0x8) != 0);  // sizes live in the central directory, not the local header
  int storages = 0;
  for (const auto& e : z.entries()) {
    const auto data = z.read(e, true);
    CHECK(data.size() == e.uncompressed_size);
    if (e.name.rfind("torch_state/data/", 0) == 0) {
      ++storages;
      CHECK((data.bytes().data() - file.data()) % 64 == 0);
    }
  }
  CHECK(storages > 3);
}

TEST_CASE("raw DEFLATE streams whose last codes sit in their final bytes inflate") {
  // Short binary entries compressed by Python's zlib end with codes in the last two bytes, the
  // case stb's inflater mishandles without padding.
  MappedFile file(fixture("torch_deflated.pt"));
  ZipArchive z(file.bytes(), file.path());
  MappedFile stored_file(fixture("torch_state.pt"));
  ZipArchive stored(stored_file.bytes(), stored_file.path());
  for (const auto& e : z.entries()) {
    CAPTURE(e.name);
    CHECK(e.method == 8);
    const auto inflated = z.read(e, true);
    CHECK(inflated.is_owned());
    CHECK(text_of(inflated) == text_of(stored.read(e.name)));
  }
}

TEST_CASE("CRC-32 is checked on request for stored entries and always for inflated ones") {
  auto bytes = file_bytes(fixture("plain.zip"));
  {
    ZipArchive z(bytes, "plain.zip");
    const auto raw = z.raw_data(z.get("stored.bin"));
    bytes[static_cast<std::size_t>(raw.data() - bytes.data()) + 10] ^= std::byte{0x01};
  }
  ZipArchive z(bytes, "plain.zip");
  CHECK(static_cast<int>(z.read("stored.bin").bytes()[10]) == 11);  // unchecked: the flipped byte shows
  CHECK_THROWS_WITH_AS(z.read("stored.bin", true), doctest::Contains("entry 'stored.bin' fails its CRC-32 check"), Error);

  // Corrupt the central directory's CRC for hello.txt (the first entry): inflating succeeds but
  // the check that always follows it fails.
  auto bytes2 = file_bytes(fixture("plain.zip"));
  bytes2[first_central_header(bytes2) + 16] ^= std::byte{0x40};
  ZipArchive z2(bytes2, "plain.zip");
  CHECK_THROWS_WITH_AS(z2.read("hello.txt"), doctest::Contains("entry 'hello.txt' fails its CRC-32 check"), Error);
}

TEST_CASE("hostile sizes and offsets are refused with the archive named") {
  const auto original = file_bytes(fixture("plain.zip"));
  const std::size_t end = find_sig(original, 0x06054b50);

  auto b = original;
  put_u32(b, end + 12, 0xfffffff0u);  // central directory size
  CHECK_THROWS_WITH_AS(ZipArchive(b, "huge.zip"), doctest::Contains("huge.zip: central directory"), Error);

  b = original;
  put_u16(b, end + 10, 0xfffe);  // entry count
  CHECK_THROWS_WITH_AS(ZipArchive(b, "count.zip"), doctest::Contains("claims 65534 entries"), Error);

  b = original;
  put_u32(b, end + 16, static_cast<std::uint32_t>(b.size()));  // directory offset past the end
  CHECK_THROWS_AS(ZipArchive(b, "offset.zip"), Error);

  b = original;
  put_u16(b, end + 10, 0xffff);  // says ZIP64 but has no ZIP64 records
  CHECK_THROWS_WITH_AS(ZipArchive(b, "z64.zip"), doctest::Contains("ZIP64 records but they are missing"), Error);

  // A compressed entry claiming an impossible expansion is refused before inflating.
  b = original;
  put_u32(b, first_central_header(b) + 24, 0x7fffffffu);  // hello.txt uncompressed size
  ZipArchive bomb(b, "bomb.zip");
  CHECK_THROWS_WITH_AS(bomb.read("hello.txt"), doctest::Contains("more than DEFLATE can produce"), Error);

  // A ZIP64 locator pointing outside the file.
  auto z64 = file_bytes(fixture("zip64.zip"));
  const std::size_t locator = find_sig(z64, 0x07064b50);
  const std::uint64_t far = 1ull << 60;
  std::memcpy(z64.data() + locator + 8, &far, 8);
  CHECK_THROWS_WITH_AS(ZipArchive(z64, "loc.zip"), doctest::Contains("ZIP64 end record offset"), Error);

  std::vector<std::byte> tiny(10, std::byte{0});
  CHECK_THROWS_WITH_AS(ZipArchive(tiny, "tiny.zip"), doctest::Contains("too small to be a zip archive"), Error);
  std::vector<std::byte> junk(1000, std::byte{0x41});
  CHECK_THROWS_WITH_AS(ZipArchive(junk, "junk.bin"), doctest::Contains("junk.bin: not a zip archive"), Error);
}

TEST_CASE("every truncation of an archive throws Error") {
  for (const char* name : {"plain.zip", "zip64.zip", "torch_state.pt"}) {
    const auto original = file_bytes(fixture(name));
    REQUIRE_NOTHROW(read_all(original));
    for (std::size_t cut = 0; cut < original.size(); ++cut) {
      CAPTURE(name);
      CAPTURE(cut);
      CHECK_THROWS_AS(read_all(std::span(original).first(cut)), Error);
    }
  }
}

TEST_CASE("bit flips anywhere either throw Error or read back the original contents") {
  for (const char* name : {"plain.zip", "zip64.zip"}) {
    const auto original = file_bytes(fixture(name));
    const auto expected = read_all(original);
    std::size_t failures = 0, successes = 0;
    for (std::size_t i = 0; i < original.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        auto b = original;
        b[i] ^= std::byte{static_cast<unsigned char>(1u << bit)};
        try {
          const auto got = read_all(b);
          ++successes;
          // CRCs are checked, so whatever is read under an original name must be the original data.
          for (const auto& [entry, data] : got) {
            auto it = expected.find(entry);
            if (it != expected.end()) {
              CAPTURE(i);
              CHECK(data == it->second);
            }
          }
        } catch (const Error&) {
          ++failures;
        }
      }
    }
    CAPTURE(name);
    CHECK(failures > 0);
    CHECK(successes > 0);  // timestamps, comments and version fields are not checked, by design
  }
}
