// The synthetic MVTec-layout dataset (eval/synthetic_dataset.hpp) and its program focuspatch-synth:
// determinism, the folder layout, masks that cover exactly what a defect changed, normal images that
// vary but stay alike, and the command line's error handling.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include <stb/stb_image.h>

#include "focuspatch/eval/synthetic_dataset.hpp"
#include "focuspatch/io/image.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

constexpr int size = 64;

// A fresh folder under the system's temporary folder, removed again at the end of the test.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("focuspatch-test-synth-" + std::to_string(::getpid()) + "-" + tag);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

std::vector<std::string> all_categories() {
  std::vector<std::string> v;
  for (const auto& c : synthetic_categories) v.emplace_back(c.name);
  return v;
}

std::vector<std::string> all_defects() {
  std::vector<std::string> v;
  for (const auto& d : synthetic_defects) v.emplace_back(d.name);
  return v;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

std::set<std::string> numbered(int n, const std::string& suffix) {
  std::set<std::string> names;
  for (int i = 0; i < n; ++i) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%03d", i);
    names.insert(buf + suffix);
  }
  return names;
}

std::array<double, 3> mean_colour(const Image& img) {
  std::array<double, 3> m{};
  for (std::size_t i = 0; i < img.pixel_count(); ++i)
    for (std::size_t c = 0; c < 3; ++c) m[c] += img.rgb[i * 3 + c];
  for (double& v : m) v /= static_cast<double>(img.pixel_count());
  return m;
}

double mean_abs_difference(const Image& a, const Image& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.rgb.size(); ++i) sum += std::abs(int(a.rgb[i]) - int(b.rgb[i]));
  return sum / static_cast<double>(a.rgb.size());
}

// A PNG read as stored: channel count, size and the raw single-channel bytes.
struct GreyPng {
  int width = 0, height = 0, channels = 0;
  std::vector<std::uint8_t> pixels;
};

GreyPng read_grey_png(const fs::path& p) {
  GreyPng g;
  REQUIRE_MESSAGE(stbi_info(p.c_str(), &g.width, &g.height, &g.channels) == 1, "cannot read ", p.string());
  int w = 0, h = 0, c = 0;
  unsigned char* data = stbi_load(p.c_str(), &w, &h, &c, 1);
  REQUIRE(data != nullptr);
  g.pixels.assign(data, data + static_cast<std::size_t>(w) * static_cast<std::size_t>(h));
  stbi_image_free(data);
  return g;
}

struct ToolRun {
  int status = -1;
  std::string out, err;
};

// Runs focuspatch-synth with `args` (already quoted as the shell needs) and collects its output.
ToolRun run_synth(const std::string& args, const fs::path& scratch) {
  const fs::path tool = fs::path(FOCUSPATCH_TOOLS_DIR) / "focuspatch-synth";
  REQUIRE_MESSAGE(fs::exists(tool), tool.string(), " is missing: build the focuspatch-synth target first");
  const fs::path out = scratch / "stdout.txt", err = scratch / "stderr.txt";
  const std::string cmd = "'" + tool.string() + "' " + args + " >'" + out.string() + "' 2>'" + err.string() + "'";
  const int rc = std::system(cmd.c_str());
  ToolRun r;
  r.status = (rc != -1 && WIFEXITED(rc)) ? WEXITSTATUS(rc) : -1;
  r.out = read_text(out);
  r.err = read_text(err);
  return r;
}

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

}  // namespace

TEST_CASE("the same seed renders the same bytes, another seed other images") {
  for (const std::string& category : all_categories()) {
    CAPTURE(category);
    const auto a = render_synthetic_sample(category, SyntheticSplit::train, "good", 0, size, 7);
    const auto b = render_synthetic_sample(category, SyntheticSplit::train, "good", 0, size, 7);
    const auto c = render_synthetic_sample(category, SyntheticSplit::train, "good", 0, size, 8);
    CHECK(a.image.rgb == b.image.rgb);
    CHECK(a.image.rgb != c.image.rgb);
    CHECK(a.mask.empty());
    CHECK(a.image.rgb == a.clean.rgb);
    for (const std::string& defect : all_defects()) {
      CAPTURE(defect);
      const auto d = render_synthetic_sample(category, SyntheticSplit::test, defect, 1, size, 7);
      const auto e = render_synthetic_sample(category, SyntheticSplit::test, defect, 1, size, 7);
      const auto f = render_synthetic_sample(category, SyntheticSplit::test, defect, 1, size, 8);
      CHECK(d.image.rgb == e.image.rgb);
      CHECK(d.mask == e.mask);
      CHECK(d.image.rgb != f.image.rgb);
      CHECK(d.mask != f.mask);
    }
  }
}

TEST_CASE("the folder layout is MVTec AD's, with the counts asked for") {
  TempDir tmp("layout");
  SyntheticDatasetOptions o;
  o.image_size = size;
  o.train_good = 3;  // three different counts, so that a swap between them shows
  o.test_good = 2;
  o.test_per_defect = 1;
  o.seed = 11;
  const auto summary = write_synthetic_dataset(tmp.path, o);

  std::set<std::string> expected_top{"README.txt"};
  for (const auto& c : all_categories()) expected_top.insert(c);
  CHECK(names_in(tmp.path) == expected_top);
  REQUIRE(summary.size() == synthetic_categories.size());

  const std::vector<std::string> defect_list = all_defects();
  const std::set<std::string> defects(defect_list.begin(), defect_list.end());
  std::set<std::string> test_folders = defects;
  test_folders.insert("good");
  for (std::size_t k = 0; k < summary.size(); ++k) {
    const std::string category(synthetic_categories[k].name);
    CAPTURE(category);
    CHECK(summary[k].category == category);
    CHECK(summary[k].train_good == 3);
    CHECK(summary[k].test_good == 2);
    CHECK(summary[k].test_defects.size() == defects.size());
    for (const auto& [name, n] : summary[k].test_defects) CHECK(n == 1);

    const fs::path base = tmp.path / category;
    CHECK(names_in(base) == std::set<std::string>{"train", "test", "ground_truth"});
    CHECK(names_in(base / "train") == std::set<std::string>{"good"});
    CHECK(names_in(base / "train" / "good") == numbered(3, ".png"));
    CHECK(names_in(base / "test") == test_folders);
    CHECK(names_in(base / "test" / "good") == numbered(2, ".png"));
    CHECK(names_in(base / "ground_truth") == defects);  // good images have no masks
    for (const std::string& defect : defects) {
      CAPTURE(defect);
      CHECK(names_in(base / "test" / defect) == numbered(1, ".png"));
      CHECK(names_in(base / "ground_truth" / defect) == numbered(1, "_mask.png"));
      const Image img = load_image((base / "test" / defect / "000.png").string());
      const GreyPng mask = read_grey_png(base / "ground_truth" / defect / "000_mask.png");
      CHECK(mask.channels == 1);
      CHECK(mask.width == img.width);
      CHECK(mask.height == img.height);
      CHECK(std::all_of(mask.pixels.begin(), mask.pixels.end(), [](std::uint8_t v) { return v == 0 || v == 255; }));
      CHECK(std::count(mask.pixels.begin(), mask.pixels.end(), 255) > 0);
    }
    const Image good = load_image((base / "train" / "good" / "002.png").string());
    CHECK(good.width == size);
    CHECK(good.height == size);
    CHECK_FALSE(good.has_alpha());
  }
  const std::string readme = read_text(tmp.path / "README.txt");
  CHECK(readme.find("not MVTec AD") != std::string::npos);
  CHECK(readme.find("seed:                     11\n") != std::string::npos);
  CHECK(readme.find("64 x 64") != std::string::npos);
  CHECK(readme.find("--train 3 --test-good 2 --test-defect 1 --seed 11") != std::string::npos);
}

TEST_CASE("an image does not depend on which other categories are written") {
  TempDir all("all"), one("one");
  SyntheticDatasetOptions o;
  o.image_size = size;
  o.train_good = 2;
  o.test_good = 1;
  o.test_per_defect = 1;
  write_synthetic_dataset(all.path, o);
  o.categories = {"capsule"};
  write_synthetic_dataset(one.path, o);
  CHECK(names_in(one.path) == std::set<std::string>{"README.txt", "capsule"});
  for (const auto* rel : {"train/good/001.png", "test/good/000.png", "test/stain/000.png", "ground_truth/stain/000_mask.png"}) {
    CAPTURE(rel);
    const std::string a = read_text(all.path / "capsule" / rel), b = read_text(one.path / "capsule" / rel);
    CHECK(!a.empty());
    CHECK(a == b);
  }
}

TEST_CASE("a mask holds exactly the pixels its defect changed") {
  for (const std::string& category : all_categories()) {
    for (const std::string& defect : all_defects()) {
      for (int index = 0; index < 3; ++index) {
        CAPTURE(category);
        CAPTURE(defect);
        CAPTURE(index);
        const auto s = render_synthetic_sample(category, SyntheticSplit::test, defect, index, size, 3);
        REQUIRE(s.mask.size() == s.image.pixel_count());
        REQUIRE(s.clean.rgb.size() == s.image.rgb.size());
        std::size_t inside = 0, inside_changed = 0, outside_changed = 0, not_binary = 0;
        for (std::size_t i = 0; i < s.mask.size(); ++i) {
          const bool changed = !std::equal(&s.image.rgb[i * 3], &s.image.rgb[i * 3 + 3], &s.clean.rgb[i * 3]);
          not_binary += s.mask[i] != 0 && s.mask[i] != 255;
          if (s.mask[i]) {
            ++inside;
            inside_changed += changed;
          } else {
            outside_changed += changed;
          }
        }
        CHECK(not_binary == 0);
        CHECK(outside_changed == 0);
        CHECK(inside >= 4);
        CHECK(inside < s.mask.size() / 5);  // a defect, not a different image
        CHECK(static_cast<double>(inside_changed) >= 0.9 * static_cast<double>(inside));
        // The clean image is an ordinary normal image of the category, not a blank.
        CHECK(mean_abs_difference(s.clean, render_synthetic_sample(category, SyntheticSplit::test, "good", index, size,
                                                                   3).image) > 1.0);
      }
    }
  }
}

TEST_CASE("normal images of a category differ from each other but stay alike") {
  std::vector<std::array<double, 3>> category_means;
  for (const std::string& category : all_categories()) {
    CAPTURE(category);
    std::vector<Image> images;
    for (int i = 0; i < 4; ++i)
      images.push_back(render_synthetic_sample(category, SyntheticSplit::train, "good", i, size, 5).image);
    for (int i = 0; i < 2; ++i)
      images.push_back(render_synthetic_sample(category, SyntheticSplit::test, "good", i, size, 5).image);
    for (std::size_t a = 0; a < images.size(); ++a) {
      for (std::size_t b = 0; b < a; ++b) {
        CAPTURE(a);
        CAPTURE(b);
        CHECK(mean_abs_difference(images[a], images[b]) > 1.0);  // not copies of one image
        const auto ma = mean_colour(images[a]), mb = mean_colour(images[b]);
        for (int c = 0; c < 3; ++c) CHECK(std::abs(ma[c] - mb[c]) < 20.0);  // out of 255
      }
    }
    category_means.push_back(mean_colour(images[0]));
  }
  // Categories are told apart by colour alone: every pair differs by a clear margin in some channel.
  for (std::size_t a = 0; a < category_means.size(); ++a) {
    for (std::size_t b = 0; b < a; ++b) {
      double largest = 0;
      for (int c = 0; c < 3; ++c) largest = std::max(largest, std::abs(category_means[a][c] - category_means[b][c]));
      CHECK(largest > 15.0);
    }
  }
}

TEST_CASE("bad options are refused with a message naming them") {
  SyntheticDatasetOptions o;
  o.image_size = 16;
  CHECK_THROWS_WITH_AS(check_synthetic_options(o), doctest::Contains("image size 16 is out of range"), Error);
  o = {};
  o.train_good = 0;
  CHECK_THROWS_WITH_AS(check_synthetic_options(o), doctest::Contains("training image count 0"), Error);
  o = {};
  o.test_per_defect = 1000;
  CHECK_THROWS_WITH_AS(check_synthetic_options(o), doctest::Contains("1000 is out of range"), Error);
  o = {};
  o.categories = {"weave", "marble"};
  CHECK_THROWS_WITH_AS(check_synthetic_options(o), doctest::Contains("unknown category 'marble'"), Error);
  o.categories = {"grain", "grain"};
  CHECK_THROWS_WITH_AS(check_synthetic_options(o), doctest::Contains("listed twice"), Error);
  CHECK_THROWS_WITH_AS(render_synthetic_sample("weave", SyntheticSplit::test, "dent", 0, size, 0),
                       doctest::Contains("unknown defect type 'dent'"), Error);
  CHECK_THROWS_WITH_AS(render_synthetic_sample("weave", SyntheticSplit::train, "hole", 0, size, 0),
                       doctest::Contains("training images are all good"), Error);
  CHECK_THROWS_AS(render_synthetic_sample("weave", SyntheticSplit::test, "good", -1, size, 0), Error);
}

TEST_CASE("focuspatch-synth writes what the library renders") {
  TempDir tmp("cli-ok");
  const fs::path root = tmp.path / "data";
  const ToolRun r = run_synth("--out " + quoted(root) +
                                  " --size 64 --train 2 --test-good=1 --test-defect 1 --seed 9 --categories washer,weave",
                              tmp.path);
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(r.err.empty());
  CHECK(names_in(root) == std::set<std::string>{"README.txt", "washer", "weave"});
  CHECK(r.out.find("seed 9, 64x64 px") != std::string::npos);
  std::istringstream lines(r.out);
  std::set<std::string> rows;
  for (std::string line; std::getline(lines, line);) rows.insert(line);
  // category, train/good, test/good, then one count per defect type
  CHECK(rows.count("washer               2          1        1        1        1        1") == 1);
  CHECK(rows.count("weave                2          1        1        1        1        1") == 1);
  CHECK(r.out.find("total: 14 images and 8 masks in 2 categories") != std::string::npos);

  const auto hole = render_synthetic_sample("washer", SyntheticSplit::test, "hole", 0, 64, 9);
  CHECK(load_image((root / "washer/test/hole/000.png").string()).rgb == hole.image.rgb);
  CHECK(read_grey_png(root / "washer/ground_truth/hole/000_mask.png").pixels == hole.mask);
  const auto train = render_synthetic_sample("weave", SyntheticSplit::train, "good", 1, 64, 9);
  CHECK(load_image((root / "weave/train/good/001.png").string()).rgb == train.image.rgb);
}

TEST_CASE("focuspatch-synth refuses a non-empty folder unless forced, then replaces only its categories") {
  TempDir tmp("cli-force");
  const fs::path root = tmp.path / "data";
  fs::create_directories(root / "weave" / "train" / "good");
  std::ofstream(root / "weave" / "train" / "good" / "999.png") << "stale";
  std::ofstream(root / "notes.txt") << "keep me";

  const std::string args = "--out " + quoted(root) + " --size 32 --train 1 --test-good 0 --test-defect 0 --categories weave";
  ToolRun r = run_synth(args, tmp.path);
  CHECK(r.status == 2);
  CHECK(r.err.find("not empty") != std::string::npos);
  CHECK(r.err.find("--force") != std::string::npos);
  CHECK(fs::exists(root / "weave" / "train" / "good" / "999.png"));

  r = run_synth(args + " --force", tmp.path);
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(names_in(root / "weave" / "train" / "good") == numbered(1, ".png"));
  CHECK(names_in(root / "weave") == std::set<std::string>{"train"});  // no empty test or mask folders
  CHECK(read_text(root / "notes.txt") == "keep me");

  // An empty folder needs no --force.
  fs::create_directories(tmp.path / "empty");
  r = run_synth("--out " + quoted(tmp.path / "empty") + " --size 32 --train 1 --test-good 0 --test-defect 0", tmp.path);
  CHECK(r.status == 0);
}

TEST_CASE("focuspatch-synth reports bad arguments clearly") {
  TempDir tmp("cli-errors");
  const std::string out = "--out " + quoted(tmp.path / "data") + " ";
  struct Case {
    std::string args;
    int status;
    std::string message;
  };
  const std::vector<Case> cases{
      {"", 2, "--out ROOT is required"},
      {out + "--size abc", 2, "--size: 'abc' is not a whole number"},
      {out + "--size 64px", 2, "--size: '64px' is not a whole number"},
      {out + "--size 16", 2, "--size: 16 is out of range (32 to 4096)"},
      {out + "--size 99999999999999999999", 2, "--size: 99999999999999999999 is out of range"},
      {out + "--train 0", 2, "--train: 0 is out of range (1 to 999)"},
      {out + "--test-good 1000", 2, "--test-good: 1000 is out of range (0 to 999)"},
      {out + "--test-defect -1", 2, "--test-defect: -1 is out of range"},
      {out + "--seed -3", 2, "--seed: '-3' is not a whole number"},
      {out + "--seed 18446744073709551616", 2, "--seed: 18446744073709551616 is out of range"},
      {out + "--categories weave,marble", 2, "unknown category 'marble'"},
      {out + "--categories weave,,grain", 2, "empty name"},
      {out + "--categories grain,grain", 2, "'grain' is listed twice"},
      {out + "--size", 2, "--size needs a value"},
      {out + "--force=yes", 2, "--force takes no value"},
      {out + "--colour red", 2, "unknown argument '--colour'"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.args);
    const ToolRun r = run_synth(c.args, tmp.path);
    CHECK(r.status == c.status);
    CHECK_MESSAGE(r.err.find(c.message) != std::string::npos, r.err);
    CHECK(r.out.empty());
  }
  CHECK_FALSE(fs::exists(tmp.path / "data"));  // nothing written by a refused command

  std::ofstream(tmp.path / "a-file") << "x";
  const ToolRun file = run_synth("--out " + quoted(tmp.path / "a-file"), tmp.path);
  CHECK(file.status == 1);
  CHECK(file.err.find("exists and is not a folder") != std::string::npos);

  const ToolRun help = run_synth("--help", tmp.path);
  CHECK(help.status == 0);
  CHECK(help.out.find("usage: focuspatch-synth --out ROOT") != std::string::npos);
  const ToolRun list = run_synth("--list", tmp.path);
  CHECK(list.status == 0);
  for (const auto& c : synthetic_categories) CHECK(list.out.find(std::string(c.name)) != std::string::npos);
  for (const auto& d : synthetic_defects) CHECK(list.out.find(std::string(d.name)) != std::string::npos);
}
