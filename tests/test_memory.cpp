#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numbers>
#include <random>
#include <vector>

#include "focuspatch/anomaly/memory_bank.hpp"
#include "focuspatch/io/weight_writer.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("focuspatch_test_memory_" + std::to_string(::getpid()) + "_" + name);
}

// A unit vector in the plane at `degrees`.
std::vector<float> at_angle(double degrees) {
  const double r = degrees * std::numbers::pi / 180.0;
  return {static_cast<float>(std::cos(r)), static_cast<float>(std::sin(r))};
}

FloatTensor rows(const std::vector<std::vector<float>>& rs) {
  std::vector<float> flat;
  for (const auto& r : rs) flat.insert(flat.end(), r.begin(), r.end());
  return FloatTensor({static_cast<std::int64_t>(rs.size()), static_cast<std::int64_t>(rs.at(0).size())}, flat);
}

FloatTensor random_rows(std::mt19937& rng, std::int64_t n, std::int64_t d) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  FloatTensor t({n, d});
  for (auto& v : t.values()) v = normal(rng);
  return t;
}

// 1 - max cosine, from the definition, in double, one pair at a time.
std::vector<double> naive_distances(const std::vector<FloatTensor>& memory, const FloatTensor& query) {
  const std::int64_t d = query.dim(1);
  auto norm = [d](const float* v) {
    double s = 0;
    for (std::int64_t j = 0; j < d; ++j) s += double(v[j]) * v[j];
    return std::sqrt(s);
  };
  std::vector<double> out;
  for (std::int64_t i = 0; i < query.dim(0); ++i) {
    const float* q = query.data() + i * d;
    double best = -2;
    for (const auto& m : memory)
      for (std::int64_t r = 0; r < m.dim(0); ++r) {
        const float* p = m.data() + r * d;
        double dot = 0;
        for (std::int64_t j = 0; j < d; ++j) dot += double(q[j]) * p[j];
        best = std::max(best, dot / (norm(q) * norm(p)));
      }
    out.push_back(1.0 - best);
  }
  return out;
}

std::vector<char> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::string error_of(const auto& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("nearest-neighbour distances on unit vectors at known angles") {
  MemoryBank bank({11}, 2, "weights-a");
  const std::vector<FloatTensor> shot = {rows({at_angle(0), at_angle(90)})};
  bank.add_shot("disc", shot, at_angle(0), "disc_0.png");

  // Query rows: 30 and 60 degrees are 30 degrees from their nearest memory patch, 45 is 45 from
  // both, 180 is 90 from the 90-degree patch, 225 is 135 from both; (3, 0) is the 0-degree
  // patch, unnormalised.
  const FloatTensor query = rows({at_angle(30), at_angle(60), at_angle(45), at_angle(180), at_angle(225), {3.0f, 0.0f}});
  const std::vector<float> d = bank.nearest_distances("disc", 0, query);
  REQUIRE(d.size() == 6);
  CHECK(d[0] == doctest::Approx(1.0 - std::sqrt(3.0) / 2.0).epsilon(1e-6));
  CHECK(d[1] == doctest::Approx(1.0 - std::sqrt(3.0) / 2.0).epsilon(1e-6));
  CHECK(d[2] == doctest::Approx(1.0 - std::sqrt(0.5)).epsilon(1e-6));
  CHECK(d[3] == doctest::Approx(1.0).epsilon(1e-6));
  CHECK(d[4] == doctest::Approx(1.0 + std::sqrt(0.5)).epsilon(1e-6));
  CHECK(d[5] == doctest::Approx(0.0).epsilon(1e-6));
}

TEST_CASE("distances are averaged over layers") {
  MemoryBank bank({6, 12}, 2, "weights-a");
  // Layer 6 remembers 0 and 90 degrees, layer 12 only 0 degrees (twice, to keep the patch count).
  const std::vector<FloatTensor> shot = {rows({at_angle(0), at_angle(90)}), rows({at_angle(0), at_angle(0)})};
  bank.add_shot("disc", shot, at_angle(0), "disc_0.png");
  const std::vector<FloatTensor> query = {rows({at_angle(90), at_angle(30)}), rows({at_angle(90), at_angle(30)})};
  const std::vector<float> d = bank.nearest_distances("disc", query);
  REQUIRE(d.size() == 2);
  CHECK(d[0] == doctest::Approx((0.0 + 1.0) / 2).epsilon(1e-6));
  const double c30 = 1.0 - std::sqrt(3.0) / 2.0;
  CHECK(d[1] == doctest::Approx((c30 + c30) / 2).epsilon(1e-6));

  const std::vector<FloatTensor> one_layer = {query[0]};
  CHECK_THROWS_WITH_AS(bank.nearest_distances("disc", one_layer), doctest::Contains("features for 1 layers, the bank stores 2"),
                       Error);
  const std::vector<FloatTensor> uneven = {query[0], rows({at_angle(0)})};
  CHECK_THROWS_WITH_AS(bank.nearest_distances("disc", uneven), doctest::Contains("1 patches at layer 12 but 2 at layer 6"),
                       Error);
}

TEST_CASE("the blocked matrix product equals a naive loop, for any block size") {
  std::mt19937 rng(1234);
  const std::int64_t d = 16;
  MemoryBank bank({0, 1}, d, "weights-a");
  std::vector<std::vector<FloatTensor>> shots;  // [shot][layer]
  for (int s = 0; s < 3; ++s) {
    shots.push_back({random_rows(rng, 50, d), random_rows(rng, 50, d)});
    bank.add_shot("widget", shots.back(), random_rows(rng, 1, d).values(), "widget_" + std::to_string(s) + ".png");
  }
  const std::vector<FloatTensor> query = {random_rows(rng, 37, d), random_rows(rng, 37, d)};
  // Another category holding the query itself: its distances would be 0, so scoring "widget"
  // must not see it.
  bank.add_shot("decoy", query, random_rows(rng, 1, d).values(), "decoy.png");
  REQUIRE(bank.patch_count("widget") == 150);

  std::vector<double> expected(37, 0.0);
  for (std::size_t l = 0; l < 2; ++l) {
    std::vector<FloatTensor> memory;
    for (const auto& s : shots) memory.push_back(s[l]);
    const auto per_layer = naive_distances(memory, query[l]);
    for (std::size_t i = 0; i < 37; ++i) expected[i] += per_layer[i] / 2;
  }
  for (std::int64_t block :
       {std::int64_t{64}, std::int64_t{1}, std::int64_t{7}, std::int64_t{150}, MemoryBank::kDefaultBlockRows}) {
    CAPTURE(block);
    bank.set_block_rows(block);
    const std::vector<float> ours = bank.nearest_distances("widget", query);
    REQUIRE(ours.size() == 37);
    double worst = 0;
    for (std::size_t i = 0; i < 37; ++i) worst = std::max(worst, std::abs(ours[i] - expected[i]));
    CHECK(worst < 1e-5);
    CHECK(*std::min_element(ours.begin(), ours.end()) > 0.05f);  // not matched against the decoy
  }
  for (float v : bank.nearest_distances("decoy", query)) CHECK(v == doctest::Approx(0.0).epsilon(1e-5));
}

TEST_CASE("routing picks the category whose closest shot is most similar") {
  MemoryBank bank({0}, 3, "weights-a");
  const std::vector<FloatTensor> patches = {rows({{1.0f, 0.0f, 0.0f}})};
  const float s = static_cast<float>(std::sqrt(0.5));
  bank.add_shot("bottle", patches, std::vector<float>{1, 0, 0}, "bottle_0.png");
  bank.add_shot("cable", patches, std::vector<float>{0, 1, 0}, "cable_0.png");
  bank.add_shot("cable", patches, std::vector<float>{0, s, s}, "cable_1.png");
  bank.add_shot("screw", patches, std::vector<float>{0, 0, 2}, "screw_0.png");  // normalised on the way in

  // q = (0.1, 0.9, 0.5): cosines bottle .1/|q|, cable max(.9, 1.4/sqrt 2)/|q|, screw .5/|q|.
  const std::vector<float> q = {0.1f, 0.9f, 0.5f};
  const double qn = std::sqrt(0.01 + 0.81 + 0.25);
  const CategoryRoute r = bank.route(q);
  CHECK(r.category == "cable");
  CHECK(r.similarity == doctest::Approx(1.4 / std::sqrt(2.0) / qn).epsilon(1e-6));
  CHECK(r.margin == doctest::Approx((1.4 / std::sqrt(2.0) - 0.5) / qn).epsilon(1e-6));

  const auto sims = bank.category_similarities(q);
  REQUIRE(sims.size() == 3);
  CHECK(sims[0].first == "bottle");
  CHECK(sims[0].second == doctest::Approx(0.1 / qn).epsilon(1e-6));
  CHECK(sims[2].first == "screw");
  CHECK(sims[2].second == doctest::Approx(0.5 / qn).epsilon(1e-6));

  CHECK(bank.route(std::vector<float>{0.2f, 0.0f, 1.0f}).category == "screw");
  CHECK(bank.route(std::vector<float>{5.0f, 1.0f, 1.0f}).category == "bottle");
}

TEST_CASE("routing ties go to the first category by name; one category has an infinite margin") {
  MemoryBank bank({0}, 2, "weights-a");
  const std::vector<FloatTensor> patches = {rows({at_angle(0)})};
  bank.add_shot("zipper", patches, at_angle(10), "z.png");
  bank.add_shot("carpet", patches, at_angle(10), "c.png");
  const CategoryRoute tie = bank.route(at_angle(10));
  CHECK(tie.category == "carpet");
  CHECK(tie.margin == 0.0f);

  MemoryBank single({0}, 2, "weights-a");
  single.add_shot("grid", patches, at_angle(0), "g.png");
  const CategoryRoute r = single.route(at_angle(60));
  CHECK(r.category == "grid");
  CHECK(r.similarity == doctest::Approx(0.5).epsilon(1e-6));
  CHECK(std::isinf(r.margin));
}

TEST_CASE("bad input is refused with a message naming the problem") {
  MemoryBank bank({3, 7}, 2, "weights-a");
  const std::vector<FloatTensor> good = {rows({at_angle(0), at_angle(90)}), rows({at_angle(0), at_angle(45)})};

  CHECK_THROWS_WITH_AS(bank.route(at_angle(0)), doctest::Contains("empty"), Error);
  CHECK_THROWS_WITH_AS(bank.nearest_distances("tile", good), doctest::Contains("empty"), Error);

  const std::vector<FloatTensor> wide = {FloatTensor({2, 3}), FloatTensor({2, 3})};
  CHECK_THROWS_WITH_AS(bank.add_shot("tile", wide, at_angle(0), "tile_0.png"),
                       doctest::Contains("shot tile_0.png layer 3 features have shape [2, 3], expected [patches, 2]"), Error);
  const std::vector<FloatTensor> one_layer = {good[0]};
  CHECK_THROWS_WITH_AS(bank.add_shot("tile", one_layer, at_angle(0), "tile_0.png"), doctest::Contains("features for 1 layers"),
                       Error);
  CHECK_THROWS_WITH_AS(bank.add_shot("tile", good, std::vector<float>{1, 0, 0}, "tile_0.png"),
                       doctest::Contains("global embedding of 3 values"), Error);
  const std::vector<FloatTensor> zero_row = {rows({at_angle(0), {0.0f, 0.0f}}), good[1]};
  CHECK_THROWS_WITH_AS(bank.add_shot("tile", zero_row, at_angle(0), "tile_0.png"), doctest::Contains("row 1 is all zeros"),
                       Error);
  CHECK(bank.empty());  // failed adds left nothing behind

  bank.add_shot("tile", good, at_angle(0), "tile_0.png");
  bank.add_shot("wood", good, at_angle(90), "wood_0.png");
  CHECK_THROWS_WITH_AS(bank.nearest_distances("leather", good), doctest::Contains("no category 'leather' (it holds: tile, wood)"),
                       Error);
  CHECK_THROWS_WITH_AS(bank.route(std::vector<float>{1, 0, 0}), doctest::Contains("query embedding has 3 values"), Error);
  const std::vector<FloatTensor> wide_query = {FloatTensor({4, 3}), FloatTensor({4, 3})};
  CHECK_THROWS_WITH_AS(bank.nearest_distances("tile", wide_query), doctest::Contains("have shape [4, 3], expected [patches, 2]"),
                       Error);
  CHECK_THROWS_AS(bank.set_block_rows(0), Error);

  CHECK_THROWS_AS(MemoryBank({}, 2, "w"), Error);
  CHECK_THROWS_WITH_AS(MemoryBank({4, 4}, 2, "w"), doctest::Contains("layer 4 is listed twice"), Error);
  CHECK_THROWS_AS(MemoryBank({4}, 0, "w"), Error);
  CHECK_THROWS_AS(MemoryBank({4}, 2, ""), Error);
}

TEST_CASE("save and load round-trip exactly; other weights, truncation and foreign files are refused") {
  std::mt19937 rng(99);
  const std::int64_t d = 8;
  MemoryBank bank({4, 8, 12}, d, "fpw-data-crc32:0x1a2b3c4d");
  for (const char* category : {"transistor", "bottle"})
    for (int s = 0; s < 2; ++s) {
      const std::vector<FloatTensor> layers = {random_rows(rng, 9, d), random_rows(rng, 9, d), random_rows(rng, 9, d)};
      bank.add_shot(category, layers, random_rows(rng, 1, d).values(),
                    std::string(category) + "/good/00" + std::to_string(s) + ".png");
    }
  const auto path = temp_path("bank.fpw");
  bank.save(path);

  const MemoryBank loaded = MemoryBank::load(path, "fpw-data-crc32:0x1a2b3c4d");
  CHECK(loaded.layers() == bank.layers());
  CHECK(loaded.feature_dim() == d);
  CHECK(loaded.weights_id() == bank.weights_id());
  CHECK(loaded.categories() == std::vector<std::string>{"bottle", "transistor"});
  for (const auto& c : bank.categories()) {
    CAPTURE(c);
    CHECK(loaded.shot_files(c) == bank.shot_files(c));
    CHECK(loaded.shot_count(c) == 2);
    CHECK(loaded.patch_count(c) == 18);
    const auto a = bank.shot_embeddings(c), b = loaded.shot_embeddings(c);
    REQUIRE(a.size() == b.size());
    CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    for (std::size_t l = 0; l < 3; ++l) {
      const auto pa = bank.patches(c, l), pb = loaded.patches(c, l);
      REQUIRE(pa.size() == pb.size());
      CHECK(std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(float)) == 0);
    }
  }
  const std::vector<FloatTensor> query = {random_rows(rng, 5, d), random_rows(rng, 5, d), random_rows(rng, 5, d)};
  CHECK(loaded.nearest_distances("bottle", query) == bank.nearest_distances("bottle", query));
  CHECK(loaded.route(query[0].row(0)).category == bank.route(query[0].row(0)).category);

  SUBCASE("another weights identifier is a clear error") {
    const std::string msg = error_of([&] { (void)MemoryBank::load(path, "fpw-data-crc32:0xdeadbeef"); });
    CHECK(msg.find(path.string()) != std::string::npos);
    CHECK(msg.find("built with CLIP weights 'fpw-data-crc32:0x1a2b3c4d'") != std::string::npos);
    CHECK(msg.find("'fpw-data-crc32:0xdeadbeef'") != std::string::npos);
    CHECK(msg.find("Rebuild the memory bank") != std::string::npos);
  }
  SUBCASE("every truncation is reported with the file's name") {
    const auto bytes = read_all(path);
    const auto cut = temp_path("cut.fpw");
    for (std::size_t n : {std::size_t{0}, std::size_t{20}, std::size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
      CAPTURE(n);
      std::ofstream(cut, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(n));
      const std::string msg = error_of([&] { (void)MemoryBank::load(cut, "fpw-data-crc32:0x1a2b3c4d"); });
      CHECK(msg.find(cut.string()) != std::string::npos);
    }
    std::ofstream(cut, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
    CHECK(error_of([&] { (void)MemoryBank::load(cut, "fpw-data-crc32:0x1a2b3c4d"); }).find("truncated") != std::string::npos);
    fs::remove(cut);
  }
  SUBCASE("a weight file that is not a memory bank") {
    WeightWriter w;
    w.set_meta("general.architecture", "clip");
    w.add_tensor("x", DType::F32, FloatTensor({2}, {1.0f, 2.0f}));
    const auto other = temp_path("clip.fpw");
    w.write(other);
    CHECK_THROWS_WITH_AS(MemoryBank::load(other, "fpw-data-crc32:0x1a2b3c4d"),
                         doctest::Contains("not a focuspatch memory bank (general.architecture is 'clip'"), Error);
    fs::remove(other);
  }
  SUBCASE("a missing file") {
    CHECK_THROWS_WITH_AS(MemoryBank::load(temp_path("absent.fpw"), "x"), doctest::Contains("cannot open"), Error);
  }
  fs::remove(path);
  CHECK_THROWS_WITH_AS(MemoryBank({0}, 2, "w").save(path), doctest::Contains("empty memory bank"), Error);
}
