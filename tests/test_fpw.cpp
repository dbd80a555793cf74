#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "focuspatch/io/weight_file.hpp"
#include "focuspatch/io/weight_writer.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {
fs::path temp_path(const std::string& name) { return fs::temp_directory_path() / ("focuspatch_test_fpw_" + name); }

std::vector<char> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void write_all(const fs::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

FloatTensor ramp(Shape shape, float scale) {
  FloatTensor t(std::move(shape));
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data()[i] = scale * static_cast<float>(i) - 1.0f;
  return t;
}

fs::path write_sample(const std::string& name) {
  WeightWriter w;
  w.set_meta("general.architecture", "clip");
  w.set_meta("clip.vision.width", 768);
  w.set_meta("clip.logit_scale", 4.6052);
  w.set_meta("clip.image_mean", fpw::MetaValue::of(std::vector<double>{0.48145466, 0.4578275, 0.40821073}));
  w.set_meta("clip.layers", fpw::MetaValue::of(std::vector<std::int64_t>{3, 6, 9}));
  w.set_meta("tokenizer.vocab", fpw::MetaValue::of(std::vector<std::string>{"a", "b</w>", "<|endoftext|>"}));
  w.add_tensor("a.f32", DType::F32, ramp({3, 5}, 0.25f));
  w.add_tensor("b.f16", DType::F16, ramp({7}, 0.5f));
  w.add_tensor("c.bf16", DType::BF16, ramp({2, 2, 2}, 1.0f));
  const auto path = temp_path(name);
  w.write(path);
  return path;
}
}  // namespace

TEST_CASE("a written weight file reads back with metadata, shapes and values intact") {
  const auto path = write_sample("roundtrip.fpw");
  WeightFile f(path.string());
  CHECK(f.meta_string("general.architecture") == "clip");
  CHECK(f.meta_int("clip.vision.width") == 768);
  CHECK(f.meta_float("clip.logit_scale") == 4.6052);
  CHECK(f.meta_floats("clip.image_mean").at(2) == 0.40821073);
  CHECK(f.meta("clip.layers").ints == std::vector<std::int64_t>{3, 6, 9});
  CHECK(f.meta_strings("tokenizer.vocab").at(1) == "b</w>");
  CHECK(f.tensor_names() == std::vector<std::string>{"a.f32", "b.f16", "c.bf16"});

  const auto& a = f.tensor("a.f32", {3, 5});
  CHECK(a.dtype == DType::F32);
  CHECK(reinterpret_cast<std::uintptr_t>(a.data) % fpw::kAlignment == 0);
  const auto av = FloatTensor::from_view(a);
  CHECK(av.data()[14] == doctest::Approx(0.25 * 14 - 1.0));
  // The ramp values are exactly representable in f16 and bf16, so they must come back exactly.
  const auto bv = FloatTensor::from_view(f.tensor("b.f16"));
  CHECK(bv.data()[6] == 2.0f);
  const auto cv = FloatTensor::from_view(f.tensor("c.bf16"));
  CHECK(cv.data()[7] == 6.0f);
  CHECK_NOTHROW(f.verify_data_checksum());

  SUBCASE("lookups name the file and the problem") {
    CHECK_THROWS_WITH_AS(f.tensor("nope"), doctest::Contains("tensor 'nope' is missing"), Error);
    CHECK_THROWS_WITH_AS(f.tensor("a.f32", {5, 3}), doctest::Contains("has shape [3, 5] but the model configuration needs [5, 3]"), Error);
    CHECK_THROWS_WITH_AS(f.meta_int("general.architecture"), doctest::Contains("is a string, expected a int"), Error);
    CHECK_THROWS_WITH_AS(f.meta_int("absent.key"), doctest::Contains(path.string().c_str()), Error);
  }
  fs::remove(path);
}

TEST_CASE("every truncation of a weight file is reported, never crashes") {
  const auto path = write_sample("truncate_src.fpw");
  const auto bytes = read_all(path);
  const auto cut_path = temp_path("truncated.fpw");
  for (std::size_t cut = 0; cut < bytes.size(); cut += (cut < 600 ? 1 : 37)) {
    write_all(cut_path, std::vector<char>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut)));
    CAPTURE(cut);
    CHECK_THROWS_AS(WeightFile(cut_path.string()), Error);
  }
  fs::remove(cut_path);
  fs::remove(path);
}

TEST_CASE("bit flips are caught by the header checksum or the data checksum") {
  const auto path = write_sample("flip_src.fpw");
  const auto bytes = read_all(path);
  const auto flip_path = temp_path("flipped.fpw");
  int caught_on_open = 0, caught_on_verify = 0;
  for (std::size_t pos = 0; pos < bytes.size(); ++pos) {
    auto flipped = bytes;
    flipped[pos] = static_cast<char>(flipped[pos] ^ 0x10);
    write_all(flip_path, flipped);
    CAPTURE(pos);
    try {
      WeightFile f(flip_path.string());
      CHECK_THROWS_AS(f.verify_data_checksum(), Error);
      ++caught_on_verify;
    } catch (const Error&) {
      ++caught_on_open;
    }
  }
  CHECK(caught_on_open > 0);
  CHECK(caught_on_verify > 0);
  fs::remove(flip_path);
  fs::remove(path);
}

TEST_CASE("foreign files are named for what they are") {
  const auto path = temp_path("foreign.fpw");
  write_all(path, {'P', 'K', '\x03', '\x04', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK_THROWS_WITH_AS(WeightFile(path.string()), doctest::Contains("convert it with focuspatch-convert"), Error);
  write_all(path, std::vector<char>(100, 'x'));
  CHECK_THROWS_WITH_AS(WeightFile(path.string()), doctest::Contains("not a focuspatch weight file"), Error);
  CHECK_THROWS_WITH_AS(WeightFile((fs::temp_directory_path() / "focuspatch_does_not_exist.fpw").string()),
                       doctest::Contains("cannot open"), Error);
  fs::remove(path);
}
