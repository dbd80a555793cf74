// Dataset enumeration (MVTec AD, VisA, Real-IAD layouts built in a temporary folder from empty
// files), its error messages, and few-shot sampling against the SplitMix64 / Fisher-Yates vectors of
// tests/reference/gen_metric_cases.py (tests/fixtures/metrics/few_shot.json).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "focuspatch/eval/dataset.hpp"
#include "focuspatch/io/json.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
using namespace focuspatch::eval;
namespace fs = std::filesystem;

namespace {

// A fresh folder under the system temp directory, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("focuspatch_test_dataset_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write(const fs::path& p, const std::string& content = "") {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << content;
  REQUIRE(out.good());
}

using test::contains;
using test::error_of;

std::vector<std::string> names_relative(const std::vector<fs::path>& paths, const fs::path& root) {
  std::vector<std::string> out;
  for (const fs::path& p : paths) out.push_back(p.lexically_relative(root).generic_string());
  return out;
}
std::string rel(const fs::path& p, const fs::path& root) { return p.lexically_relative(root).generic_string(); }

// bottle: the standard MVTec layout with clutter; cable: upper-case extensions and BTAD-style masks.
void make_mvtec(const fs::path& root) {
  for (const char* f : {"002.png", "000.png", "001.PNG", "003.jpg", ".DS_Store", "notes.txt"})
    write(root / "bottle" / "train" / "good" / f);
  write(root / "bottle" / "test" / "good" / "000.png");
  write(root / "bottle" / "test" / "good" / "001.png");
  for (const char* f : {"001.png", "000.png"}) write(root / "bottle" / "test" / "broken_large" / f);
  for (const char* f : {"000_mask.png", "001_mask.png"}) write(root / "bottle" / "ground_truth" / "broken_large" / f);
  write(root / "bottle" / "test" / "contamination" / "000.png");
  write(root / "bottle" / "ground_truth" / "contamination" / "000_mask.png");
  write(root / "cable" / "train" / "good" / "A.JPEG");
  write(root / "cable" / "test" / "good" / "x.BMP");
  write(root / "cable" / "test" / "cut" / "c1.png");
  write(root / "cable" / "ground_truth" / "cut" / "c1.png");  // <stem>.png, as BTAD names masks
  write(root / "license.txt");
  write(root / "docs" / "readme.md");  // a folder without train/ or test/ is not a category
}

}  // namespace

TEST_CASE("MVTec AD layout: categories, sorted images, masks and defects") {
  TempDir tmp;
  const fs::path root = tmp.path();
  make_mvtec(root);
  const Dataset d = load_dataset(root, "mvtec");
  CHECK(d.layout == DatasetLayout::MVTec);
  REQUIRE(d.categories.size() == 2);
  const Category& bottle = d.categories[0];
  CHECK(bottle.name == "bottle");
  CHECK(d.categories[1].name == "cable");
  CHECK(names_relative(bottle.train_normal, root) ==
        std::vector<std::string>{"bottle/train/good/000.png", "bottle/train/good/001.PNG", "bottle/train/good/002.png",
                                 "bottle/train/good/003.jpg"});
  REQUIRE(bottle.test.size() == 5);
  CHECK(rel(bottle.test[0].image, root) == "bottle/test/broken_large/000.png");
  CHECK(bottle.test[0].anomalous);
  CHECK(bottle.test[0].defect == "broken_large");
  CHECK(rel(bottle.test[0].mask, root) == "bottle/ground_truth/broken_large/000_mask.png");
  CHECK(rel(bottle.test[1].mask, root) == "bottle/ground_truth/broken_large/001_mask.png");
  CHECK(bottle.test[2].defect == "contamination");
  CHECK(rel(bottle.test[3].image, root) == "bottle/test/good/000.png");
  CHECK_FALSE(bottle.test[3].anomalous);
  CHECK(bottle.test[3].defect == "good");
  CHECK(bottle.test[3].mask.empty());
  CHECK(bottle.anomalous_test_count() == 3);
  const Category& cable = d.category("cable");
  CHECK(names_relative(cable.train_normal, root) == std::vector<std::string>{"cable/train/good/A.JPEG"});
  REQUIRE(cable.test.size() == 2);
  CHECK(rel(cable.test[0].mask, root) == "cable/ground_truth/cut/c1.png");
  CHECK(contains(error_of([&] { (void)d.category("zipper"); }), "no category 'zipper' (have: bottle, cable)"));

  DatasetOptions only_cable;
  only_cable.categories = {"cable"};
  const Dataset c = load_dataset(root, DatasetLayout::MVTec, only_cable);
  REQUIRE(c.categories.size() == 1);
  CHECK(c.categories[0].name == "cable");
  DatasetOptions missing;
  missing.categories = {"bottle", "zipper"};
  CHECK(contains(error_of([&] { (void)load_dataset(root, DatasetLayout::MVTec, missing); }),
                 "no category 'zipper' in this mvtec dataset (found: bottle)"));
}

TEST_CASE("MVTec AD layout: errors name the path and the problem") {
  TempDir tmp;
  const fs::path root = tmp.path();
  CHECK(contains(error_of([&] { (void)load_dataset(root / "nowhere", "mvtec"); }),
                 (root / "nowhere").string() + ": the dataset root does not exist"));
  write(root / "file.txt");
  CHECK(contains(error_of([&] { (void)load_dataset(root / "file.txt", "mvtec"); }), "is not a directory"));
  CHECK(contains(error_of([&] { (void)load_dataset(root, "mvtec"); }), "no categories found for the mvtec layout"));
  CHECK(contains(error_of([&] { (void)load_dataset(root, "coco"); }),
                 "unknown dataset layout 'coco' (known layouts: mvtec, visa, realiad, folder)"));

  SUBCASE("no train/good") {
    write(root / "pill" / "test" / "good" / "0.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "mvtec"); }),
                   (root / "pill" / "train" / "good").string() +
                       ": the normal training folder of category 'pill' does not exist"));
  }
  SUBCASE("empty train/good") {
    fs::create_directories(root / "pill" / "train" / "good");
    write(root / "pill" / "test" / "good" / "0.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "mvtec"); }), "holds no images (.png, .jpg, .jpeg, .bmp)"));
  }
  SUBCASE("only TIFF images") {
    write(root / "pill" / "train" / "good" / "0.tif");
    write(root / "pill" / "train" / "good" / "1.tif");
    write(root / "pill" / "test" / "good" / "0.png");
    const std::string e = error_of([&] { (void)load_dataset(root, "mvtec"); });
    CHECK(contains(e, "holds only other files: 2 '.tif'"));
    CHECK(contains(e, "TIFF cannot be decoded"));
  }
  SUBCASE("anomalous image without its mask") {
    write(root / "pill" / "train" / "good" / "0.png");
    write(root / "pill" / "test" / "crack" / "007.png");
    write(root / "pill" / "ground_truth" / "crack" / "006_mask.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "mvtec"); }),
                   (root / "pill" / "test" / "crack" / "007.png").string() + ": anomalous test image has no mask (expected " +
                       (root / "pill" / "ground_truth" / "crack" / "007_mask.png").string()));
  }
  SUBCASE("no ground_truth folder for a defect") {
    write(root / "pill" / "train" / "good" / "0.png");
    write(root / "pill" / "test" / "crack" / "007.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "mvtec"); }),
                   (root / "pill" / "ground_truth" / "crack").string() + ": missing"));
  }
  SUBCASE("empty defect folder") {
    write(root / "pill" / "train" / "good" / "0.png");
    write(root / "pill" / "test" / "good" / "0.png");
    fs::create_directories(root / "pill" / "test" / "crack");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "mvtec"); }),
                   (root / "pill" / "test" / "crack").string() + ": test folder 'crack' holds no images"));
  }
  SUBCASE("no test folder") {
    write(root / "pill" / "train" / "good" / "0.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "mvtec"); }),
                   (root / "pill" / "test").string() + ": the test folder of category 'pill' does not exist"));
  }
}

TEST_CASE("VisA layout with its split file") {
  TempDir tmp;
  const fs::path root = tmp.path();
  for (const char* f : {"0000.JPG", "0001.JPG", "0002.JPG", "0003.JPG"})
    write(root / "candle" / "Data" / "Images" / "Normal" / f);
  for (const char* f : {"000.JPG", "001.JPG"}) write(root / "candle" / "Data" / "Images" / "Anomaly" / f);
  for (const char* f : {"000.png", "001.png"}) write(root / "candle" / "Data" / "Masks" / "Anomaly" / f);
  write(root / "pcb1" / "Data" / "Images" / "Normal" / "0000.JPG");
  write(root / "pcb1" / "Data" / "Images" / "Normal" / "0001.JPG");
  write(root / "pcb1" / "Data" / "Images" / "Anomaly" / "000.JPG");
  write(root / "pcb1" / "Data" / "Masks" / "Anomaly" / "000.png");
  // CRLF line ends, a byte order mark and a quoted field, as spreadsheet tools write them.
  const std::string csv =
      "\xEF\xBB\xBFobject,split,label,image,mask\r\n"
      "candle,train,normal,candle/Data/Images/Normal/0003.JPG,\r\n"
      "candle,train,normal,candle/Data/Images/Normal/0000.JPG,\r\n"
      "candle,test,normal,\"candle/Data/Images/Normal/0001.JPG\",\r\n"
      "candle,train,normal,candle/Data/Images/Normal/0002.JPG,\r\n"
      "candle,test,anomaly,candle/Data/Images/Anomaly/001.JPG,candle/Data/Masks/Anomaly/001.png\r\n"
      "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\r\n"
      "\r\n"
      "pcb1,train,normal,pcb1/Data/Images/Normal/0001.JPG,\r\n"
      "pcb1,test,normal,pcb1/Data/Images/Normal/0000.JPG,\r\n"
      "pcb1,test,anomaly,pcb1/Data/Images/Anomaly/000.JPG,pcb1/Data/Masks/Anomaly/000.png\r\n";
  write(root / "split_csv" / "1cls.csv", csv);
  write(root / "candle" / "image_anno.csv",
        "image,label,mask\n"
        "candle/Data/Images/Normal/0000.JPG,normal,\n"
        "candle/Data/Images/Anomaly/000.JPG,\"chunk of wax missing,weird candle wick\",candle/Data/Masks/Anomaly/000.png\n"
        "candle/Data/Images/Anomaly/001.JPG,damaged corner of packaging,candle/Data/Masks/Anomaly/001.png\n");

  const Dataset d = load_dataset(root, "visa");
  CHECK(d.split_source == "split_csv/1cls.csv");
  REQUIRE(d.categories.size() == 2);
  const Category& candle = d.categories[0];
  CHECK(candle.name == "candle");
  CHECK(names_relative(candle.train_normal, root) ==
        std::vector<std::string>{"candle/Data/Images/Normal/0000.JPG", "candle/Data/Images/Normal/0002.JPG",
                                 "candle/Data/Images/Normal/0003.JPG"});
  REQUIRE(candle.test.size() == 3);
  CHECK(rel(candle.test[0].image, root) == "candle/Data/Images/Anomaly/000.JPG");
  CHECK(candle.test[0].anomalous);
  CHECK(candle.test[0].defect == "chunk of wax missing,weird candle wick");
  CHECK(rel(candle.test[0].mask, root) == "candle/Data/Masks/Anomaly/000.png");
  CHECK(candle.test[1].defect == "damaged corner of packaging");
  CHECK(rel(candle.test[2].image, root) == "candle/Data/Images/Normal/0001.JPG");
  CHECK_FALSE(candle.test[2].anomalous);
  CHECK(candle.test[2].defect == "good");
  const Category& pcb1 = d.categories[1];
  CHECK(pcb1.test.size() == 2);
  CHECK(pcb1.test[0].defect == "anomaly");  // no image_anno.csv for pcb1

  SUBCASE("a row naming a missing image") {
    write(root / "split_csv" / "1cls.csv",
          "object,split,label,image,mask\ncandle,train,normal,candle/Data/Images/Normal/9999.JPG,\n");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "visa"); }),
                   "1cls.csv line 2: image '" + (root / "candle/Data/Images/Normal/9999.JPG").string() + "' does not exist"));
  }
  SUBCASE("an anomalous row without mask") {
    write(root / "split_csv" / "1cls.csv",
          "object,split,label,image,mask\ncandle,train,normal,candle/Data/Images/Normal/0000.JPG,\n"
          "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,\n");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "visa"); }),
                   "1cls.csv line 3: anomalous test image 'candle/Data/Images/Anomaly/000.JPG' has no mask"));
  }
  SUBCASE("a bad split value, a missing column, an unclosed quote") {
    write(root / "split_csv" / "1cls.csv",
          "object,split,label,image,mask\ncandle,val,normal,candle/Data/Images/Normal/0000.JPG,\n");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "visa"); }), "line 2: split is 'val', expected train or test"));
    write(root / "split_csv" / "1cls.csv", "object,split,image,mask\n");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "visa"); }), "1cls.csv: the header has no column 'label'"));
    write(root / "split_csv" / "1cls.csv", "object,split,label,image,mask\ncandle,train,normal,\"candle/x.JPG,\n");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "visa"); }), "is never closed"));
  }
  SUBCASE("a category with test images only") {
    write(root / "split_csv" / "1cls.csv", "object,split,label,image,mask\npcb1,test,normal,pcb1/Data/Images/Normal/0000.JPG,\n");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "visa"); }), "category 'pcb1' has no normal training images"));
  }
}

TEST_CASE("VisA layout without a split file falls back to a documented folder split") {
  TempDir tmp;
  const fs::path root = tmp.path();
  for (int i = 0; i < 12; ++i) {
    const std::string name = (i < 10 ? "000" : "00") + std::to_string(i) + ".JPG";
    write(root / "fryum" / "Data" / "Images" / "Normal" / name);
  }
  write(root / "fryum" / "Data" / "Images" / "Anomaly" / "000.JPG");
  write(root / "fryum" / "Data" / "Masks" / "Anomaly" / "000.png");
  const Dataset d = load_dataset(root, "visa");
  CHECK(contains(d.split_source, "not the official VisA split"));
  REQUIRE(d.categories.size() == 1);
  const Category& c = d.categories[0];
  CHECK(c.train_normal.size() == 11);
  REQUIRE(c.test.size() == 2);
  CHECK(rel(c.test[0].image, root) == "fryum/Data/Images/Anomaly/000.JPG");
  CHECK(rel(c.test[0].mask, root) == "fryum/Data/Masks/Anomaly/000.png");
  CHECK(rel(c.test[1].image, root) == "fryum/Data/Images/Normal/0009.JPG");  // every tenth: position 9
  write(root / "fryum" / "Data" / "Images" / "Anomaly" / "001.JPG");
  CHECK(contains(error_of([&] { (void)load_dataset(root, "visa"); }),
                 "001.JPG: anomalous image has no mask (expected " + (root / "fryum/Data/Masks/Anomaly/001.png").string()));
}

namespace {

const char* kRealIadJson = R"({
  "meta": {"prefix": "", "normal_class": "OK", "pre_transform": false},
  "train": [
    {"category": "audiojack", "anomaly_class": "OK", "image_path": "OK/S0002/audiojack_0002_OK_C1_20230922.jpg",
     "mask_path": null},
    {"category": "audiojack", "anomaly_class": "OK", "image_path": "OK/S0001/audiojack_0001_OK_C1_20230921.jpg",
     "mask_path": null}
  ],
  "test": [
    {"category": "audiojack", "anomaly_class": "AK", "image_path": "NG/AK/S0100/audiojack_0100_NG_C2_20230925.jpg",
     "mask_path": "NG/AK/S0100/audiojack_0100_NG_C2_20230925.png"},
    {"category": "audiojack", "anomaly_class": "OK", "image_path": "OK/S0003/audiojack_0003_OK_C1_20230923.jpg",
     "mask_path": null}
  ]
})";

void make_realiad(const fs::path& root, const std::string& json_dir) {
  const fs::path images = root / "realiad_256" / "audiojack";
  for (const char* f : {"OK/S0001/audiojack_0001_OK_C1_20230921.jpg", "OK/S0002/audiojack_0002_OK_C1_20230922.jpg",
                        "OK/S0003/audiojack_0003_OK_C1_20230923.jpg", "NG/AK/S0100/audiojack_0100_NG_C2_20230925.jpg",
                        "NG/AK/S0100/audiojack_0100_NG_C2_20230925.png"})
    write(images / f);
  write(root / json_dir / "audiojack.json", kRealIadJson);
}

}  // namespace

TEST_CASE("Real-IAD layout from its json split files") {
  TempDir tmp;
  const fs::path root = tmp.path();
  make_realiad(root, "realiad_jsons");
  const Dataset d = load_dataset(root, "realiad");
  CHECK(d.split_source == "realiad_jsons/<category>.json, images in realiad_256");
  REQUIRE(d.categories.size() == 1);
  const Category& c = d.categories[0];
  CHECK(c.name == "audiojack");
  CHECK(names_relative(c.train_normal, root) ==
        std::vector<std::string>{"realiad_256/audiojack/OK/S0001/audiojack_0001_OK_C1_20230921.jpg",
                                 "realiad_256/audiojack/OK/S0002/audiojack_0002_OK_C1_20230922.jpg"});
  REQUIRE(c.test.size() == 2);
  CHECK(rel(c.test[0].image, root) == "realiad_256/audiojack/NG/AK/S0100/audiojack_0100_NG_C2_20230925.jpg");
  CHECK(c.test[0].anomalous);
  CHECK(c.test[0].defect == "AK");
  CHECK(rel(c.test[0].mask, root) == "realiad_256/audiojack/NG/AK/S0100/audiojack_0100_NG_C2_20230925.png");
  CHECK_FALSE(c.test[1].anomalous);
  CHECK(c.test[1].defect == "good");
  CHECK(c.test[1].mask.empty());

  SUBCASE("the zip's nested json folder and an explicit image folder") {
    fs::remove_all(root / "realiad_jsons");
    write(root / "realiad_jsons" / "realiad_jsons" / "audiojack.json", kRealIadJson);
    fs::create_directories(root / "realiad_1024");  // would be picked first, but the option says 256
    DatasetOptions options;
    options.realiad_images = "realiad_256";
    const Dataset nested = load_dataset(root, DatasetLayout::RealIAD, options);
    CHECK(nested.split_source == "realiad_jsons/realiad_jsons/<category>.json, images in realiad_256");
    CHECK(nested.categories.at(0).test.size() == 2);
    // Without the option realiad_1024 comes first, and it lacks the category.
    CHECK(contains(error_of([&] { (void)load_dataset(root, "realiad"); }),
                   (root / "realiad_1024" / "audiojack").string() +
                       ": the image folder of Real-IAD category 'audiojack' does not exist"));
  }
  SUBCASE("an anomalous entry without mask_path") {
    std::string json = kRealIadJson;
    json.replace(json.find("\"NG/AK/S0100/audiojack_0100_NG_C2_20230925.png\""),
                 std::string("\"NG/AK/S0100/audiojack_0100_NG_C2_20230925.png\"").size(), "null");
    write(root / "realiad_jsons" / "audiojack.json", json);
    CHECK(contains(error_of([&] { (void)load_dataset(root, "realiad"); }),
                   "audiojack.json: test entry 0: anomalous image '" +
                       (root / "realiad_256/audiojack/NG/AK/S0100/audiojack_0100_NG_C2_20230925.jpg").string() +
                       "' has no mask_path"));
  }
  SUBCASE("a mask file that is missing") {
    fs::remove(root / "realiad_256/audiojack/NG/AK/S0100/audiojack_0100_NG_C2_20230925.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "realiad"); }), "test entry 0: mask '"));
    CHECK(contains(error_of([&] { (void)load_dataset(root, "realiad"); }), "' does not exist"));
  }
  SUBCASE("an anomalous training entry") {
    std::string json = kRealIadJson;
    json.replace(json.find("\"OK\", \"image_path\": \"OK/S0002"), 4, "\"HS\"");
    write(root / "realiad_jsons" / "audiojack.json", json);
    CHECK(contains(error_of([&] { (void)load_dataset(root, "realiad"); }), "train entry 0 is anomalous ('HS')"));
  }
  SUBCASE("malformed json, a missing list") {
    write(root / "realiad_jsons" / "audiojack.json", "{\"train\": [");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "realiad"); }), "audiojack.json"));
    write(root / "realiad_jsons" / "audiojack.json", "{\"train\": []}");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "realiad"); }), "audiojack.json: the file has no \"test\""));
  }
  SUBCASE("no image folder") {
    fs::remove_all(root / "realiad_256");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "realiad"); }),
                   ": no Real-IAD image folder (realiad_1024, realiad_512, realiad_256 or realiad_raw)"));
  }
}

TEST_CASE("few-shot sampling follows the documented SplitMix64 + Fisher-Yates draw") {
  const fs::path p = test::fixtures_dir() / "metrics" / "few_shot.json";
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture ", p.string(), " (run tests/reference/gen_metric_cases.py)");
  const json::Value fixture = json::parse(std::string(std::istreambuf_iterator<char>(in), {}), p.string());

  for (const json::Value& stream : fixture.at("splitmix64").as_array()) {
    SplitMix64 rng(std::stoull(stream.at("seed").as_string()));
    for (const json::Value& out : stream.at("outputs").as_array()) CHECK(rng.next() == std::stoull(out.as_string()));
  }
  for (const json::Value& draw : fixture.at("draws").as_array()) {
    std::vector<std::size_t> expected;
    for (const json::Value& i : draw.at("indices").as_array()) expected.push_back(static_cast<std::size_t>(i.as_int64()));
    CHECK(sample_indices(static_cast<std::size_t>(draw.at("n").as_int64()), static_cast<std::size_t>(draw.at("k").as_int64()),
                         std::stoull(draw.at("seed").as_string())) == expected);
  }
  for (const json::Value& draw : fixture.at("categories").as_array()) {
    Category c;
    c.name = draw.at("category").as_string();
    const auto n = static_cast<std::size_t>(draw.at("n").as_int64());
    for (std::size_t i = 0; i < n; ++i) {
      const std::string digits = std::to_string(i);
      c.train_normal.push_back(fs::path("train") / (std::string(4 - digits.size(), '0') + digits + ".png"));
    }
    std::vector<fs::path> expected;
    for (const json::Value& i : draw.at("indices").as_array())
      expected.push_back(c.train_normal.at(static_cast<std::size_t>(i.as_int64())));
    CHECK(sample_few_shot(c, static_cast<std::size_t>(draw.at("k").as_int64()), std::stoull(draw.at("seed").as_string())) ==
          expected);
  }
}

TEST_CASE("few-shot sampling: deterministic, seed-dependent, without replacement, bounded") {
  Category c;
  c.name = "screw";
  for (int i = 0; i < 40; ++i) c.train_normal.push_back("img" + std::to_string(1000 + i) + ".png");
  const std::vector<fs::path> a = sample_few_shot(c, 8, 42);
  CHECK(a == sample_few_shot(c, 8, 42));
  CHECK(a.size() == 8);
  CHECK(std::set<fs::path>(a.begin(), a.end()).size() == 8);
  CHECK(std::is_sorted(a.begin(), a.end()));
  std::set<std::vector<fs::path>> distinct;
  for (std::uint64_t seed = 0; seed < 10; ++seed) distinct.insert(sample_few_shot(c, 8, seed));
  CHECK(distinct.size() == 10);
  Category renamed = c;
  renamed.name = "screw2";  // the category name enters the seed
  CHECK(sample_few_shot(renamed, 8, 42) != a);
  CHECK(sample_few_shot(c, 40, 1) == c.train_normal);
  CHECK(sample_few_shot(c, 0, 1).empty());
  CHECK(contains(error_of([&] { (void)sample_few_shot(c, 41, 1); }),
                 "category 'screw': cannot draw 41 few-shot images from its 40 normal training images"));
  CHECK(contains(error_of([] { (void)sample_indices(3, 4, 0); }), "cannot draw 4 distinct items from 3"));

  // Each of 4 items is drawn about equally often over 4000 seeds (a biased draw, e.g. taking
  // `next() % (i + 1)` for the wrong range, skews this far beyond the +-15% allowed here).
  std::vector<int> counts(4, 0);
  for (std::uint64_t seed = 0; seed < 4000; ++seed) ++counts[sample_indices(4, 1, seed)[0]];
  for (int n : counts) CHECK((n > 850 && n < 1150));
  // Pairs from 5 items: all 10 pairs appear.
  std::set<std::vector<std::size_t>> pairs;
  for (std::uint64_t seed = 0; seed < 500; ++seed) pairs.insert(sample_indices(5, 2, seed));
  CHECK(pairs.size() == 10);
}

// ---- folder layout (users' own data) ------------------------------------------------------------

TEST_CASE("folder layout: good/ dealt out alternately, defect kinds, optional masks") {
  TempDir tmp;
  const fs::path root = tmp.path();
  // bracket: 5 normal images, no train/; a kind with masks (one named <stem>.png) and one without.
  for (const char* f : {"e.png", "a.png", "c.jpg", "b.png", "d.png"}) write(root / "bracket" / "good" / f);
  for (const char* f : {"s1.png", "s2.png"}) write(root / "bracket" / "scratch" / f);
  write(root / "bracket" / "ground_truth" / "scratch" / "s1_mask.png");
  write(root / "bracket" / "ground_truth" / "scratch" / "s2.png");
  write(root / "bracket" / "dent" / "x.png");
  write(root / "bracket" / ".cache" / "junk.png");  // hidden: not a kind
  // gear: train/good/ holds the shots, so all of good/ is tested.
  write(root / "gear" / "train" / "good" / "t0.png");
  write(root / "gear" / "train" / "good" / "t1.png");
  write(root / "gear" / "good" / "g0.png");
  write(root / "gear" / "chip" / "c0.png");
  write(root / "notes" / "readme.png");  // no good/: not a category

  const Dataset d = load_dataset(root, "folder");
  CHECK(d.layout == DatasetLayout::Folder);
  REQUIRE(d.categories.size() == 2);
  const Category& bracket = d.categories[0];
  CHECK(bracket.name == "bracket");
  // Sorted a b c d e: positions 0, 2, 4 train, 1, 3 test.
  CHECK(names_relative(bracket.train_normal, root) ==
        std::vector<std::string>{"bracket/good/a.png", "bracket/good/c.jpg", "bracket/good/e.png"});
  REQUIRE(bracket.test.size() == 5);
  CHECK(rel(bracket.test[0].image, root) == "bracket/dent/x.png");
  CHECK(bracket.test[0].anomalous);
  CHECK(bracket.test[0].defect == "dent");
  CHECK(bracket.test[0].mask.empty());
  CHECK_FALSE(bracket.test[0].has_pixel_truth());
  CHECK(rel(bracket.test[1].image, root) == "bracket/good/b.png");
  CHECK_FALSE(bracket.test[1].anomalous);
  CHECK(bracket.test[1].has_pixel_truth());
  CHECK(rel(bracket.test[2].image, root) == "bracket/good/d.png");
  CHECK(rel(bracket.test[3].mask, root) == "bracket/ground_truth/scratch/s1_mask.png");
  CHECK(rel(bracket.test[4].mask, root) == "bracket/ground_truth/scratch/s2.png");
  CHECK(bracket.test[4].defect == "scratch");
  CHECK(bracket.anomalous_test_count() == 3);

  const Category& gear = d.category("gear");
  CHECK(names_relative(gear.train_normal, root) == std::vector<std::string>{"gear/train/good/t0.png", "gear/train/good/t1.png"});
  REQUIRE(gear.test.size() == 2);
  CHECK(rel(gear.test[0].image, root) == "gear/chip/c0.png");
  CHECK(rel(gear.test[1].image, root) == "gear/good/g0.png");
  CHECK(contains(d.split_source, "train/good/ for shots, good/ for testing (gear)"));
  CHECK(contains(d.split_source, "good/ by name, 1st, 3rd, ... image for shots, 2nd, 4th, ... for testing (bracket)"));
}

TEST_CASE("folder layout: unmatched masks and short folders are errors naming the file") {
  TempDir tmp;
  const fs::path root = tmp.path();
  auto base = [&] {
    write(root / "bracket" / "good" / "a.png");
    write(root / "bracket" / "good" / "b.png");
    write(root / "bracket" / "scratch" / "s1.png");
  };
  SUBCASE("a mask that matches no image") {
    base();
    write(root / "bracket" / "ground_truth" / "scratch" / "s1_mask.png");
    write(root / "bracket" / "ground_truth" / "scratch" / "s9_mask.png");
    const fs::path mask = root / "bracket" / "ground_truth" / "scratch" / "s9_mask.png";
    CHECK(contains(error_of([&] { (void)load_dataset(root, "folder"); }), mask.string() + ": mask matches no image of " +
                                                                              (root / "bracket" / "scratch").string()));
  }
  SUBCASE("an image of a masked kind without its mask") {
    base();
    write(root / "bracket" / "scratch" / "s2.png");
    write(root / "bracket" / "ground_truth" / "scratch" / "s1_mask.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "folder"); }),
                   (root / "bracket" / "scratch" / "s2.png").string() + ": no mask for this image in " +
                       (root / "bracket" / "ground_truth" / "scratch").string() + " (expected s2_mask.png)"));
  }
  SUBCASE("a mask folder of no defect folder") {
    base();
    write(root / "bracket" / "ground_truth" / "scrach" / "s1_mask.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "folder"); }),
                   (root / "bracket" / "ground_truth" / "scrach").string() + ": mask folder of no defect folder"));
  }
  SUBCASE("one normal image and no train/good") {
    write(root / "bracket" / "good" / "a.png");
    write(root / "bracket" / "scratch" / "s1.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "folder"); }),
                   (root / "bracket" / "good").string() + ": 1 normal image; at least 2 are needed"));
  }
  SUBCASE("no anomalous images") {
    write(root / "bracket" / "good" / "a.png");
    write(root / "bracket" / "good" / "b.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "folder"); }), "has good/ but no folder of anomalous images"));
  }
  SUBCASE("train/ without good/") {
    base();
    fs::create_directories(root / "bracket" / "train");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "folder"); }),
                   (root / "bracket" / "train" / "good").string() + ": the normal training images of 'bracket' does not exist"));
  }
  SUBCASE("no category at all") {
    write(root / "bracket" / "scratch" / "s1.png");
    CHECK(contains(error_of([&] { (void)load_dataset(root, "folder"); }), "no categories found for the folder layout"));
  }
}
