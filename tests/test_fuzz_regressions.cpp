// Inputs that crashed a fuzz target, exhausted its memory or set off a sanitizer before the fix
// (see fuzz/README.md), fed to the same entry points the fuzz targets call. Each must now be
// answered with focuspatch::Error: a clear message, not a crash, an allocation of gigabytes or a
// silent success.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "../fuzz/fuzz_targets.hpp"
#include "test_paths.hpp"

namespace fs = std::filesystem;

namespace {

std::vector<std::uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in.good());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Regression {
  const char* file;     // under tests/fixtures/fuzz_regressions/<target>/
  const char* message;  // a part of the Error message that names what is wrong
};

// Every input must be refused with a focuspatch::Error whose message contains the given part. Some
// of the fixed bugs only showed under a sanitizer (UB, uninitialized memory): the sanitized suite
// (scripts/test-sanitized.sh) is what makes those regressions fail loudly.
void check_refused(const std::string& target, const std::function<void(focuspatch::fuzz::Bytes)>& entry,
                   const std::vector<Regression>& regressions) {
  const fs::path dir = focuspatch::test::fixtures_dir() / "fuzz_regressions" / target;
  std::size_t on_disk = 0;
  for (const auto& e : fs::directory_iterator(dir)) on_disk += e.is_regular_file() ? 1 : 0;
  CHECK(on_disk == regressions.size());  // every kept input is listed here
  for (const Regression& r : regressions) {
    CAPTURE(r.file);
    const std::vector<std::uint8_t> bytes = read_bytes(dir / r.file);
    CHECK_THROWS_WITH_AS(entry(focuspatch::fuzz::Bytes(bytes.data(), bytes.size())),
                         doctest::Contains(r.message), focuspatch::Error);
  }
}

}  // namespace

TEST_CASE("fpw: an empty tensor is decoded without passing a null pointer to memcpy") {
  // Found by fuzz_fpw (UBSan: null pointer passed to memcpy in decode_to_float); the file then
  // fails on a metadata key the fuzzer corrupted.
  check_refused("fpw", focuspatch::fuzz::fpw,
                {{"empty_tensor_memcpy_null.fpw", "metadata key 'prompts.bottle.bank' is missing"}});
}

TEST_CASE("torch: hostile pickles are refused with an Error instead of exhausting memory") {
  check_refused("torch", focuspatch::fuzz::torch,
                {{"build_merge_bomb.pkl", "BUILD merges more than"},
                 {"deflate_size_lie.pt", "more than the 64 bytes expected"},
                 {"expanded_storage_huge.pkl", "views that expand storage beyond"},
                 {"repeated_long_names.pkl", "repeats its strings so often"}});
}

TEST_CASE("image: a JPEG scan using an undefined Huffman table is refused before stb_image decodes it") {
  check_refused("image", focuspatch::fuzz::image,
                {{"progressive_undefined_ac_table.jpg", "a scan uses a Huffman table that no DHT segment defines"},
                 // A PNG header of 0xFFFFFFFF x 0xFFFFFFFF: the pixel count was formed in signed 64-bit
                 // arithmetic, which overflows (UBSan), before the limit refused it.
                 {"png_size_overflow.png", "4294967295x4294967295 = 18446744065119617025 pixels, more than the limit"}});
}
