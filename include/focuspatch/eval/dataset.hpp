#pragma once
// Enumerates an anomaly-detection dataset on disk into categories, each with its normal training
// images and its test images (label, defect type, ground-truth mask), and draws reproducible
// few-shot subsets of the training images.
//
// Layouts (ROOT is the folder given):
//   mvtec    MVTec AD: ROOT/<category>/train/good/*, ROOT/<category>/test/<defect>/* with "good" the
//            normal test images, masks ROOT/<category>/ground_truth/<defect>/<stem>_mask.<ext>
//            (<stem>.<ext> is accepted too, as MVTec-like sets such as BTAD name them). A category is
//            a folder of ROOT holding train/ or test/.
//   visa     VisA as distributed: ROOT/<category>/Data/Images/{Normal,Anomaly}/*,
//            ROOT/<category>/Data/Masks/Anomaly/*. The split comes from ROOT/split_csv/1cls.csv
//            (header object,split,label,image,mask; split train|test, label normal|anomaly; paths
//            relative to ROOT), the split every VisA result is reported on. Defect types come from
//            ROOT/<category>/image_anno.csv (image,label,mask) when present, else "anomaly".
//            Without 1cls.csv there is no official split; then the anomalous images (mask
//            Data/Masks/Anomaly/<stem>.png) are all test images and, of the normal images sorted by
//            name, every tenth (positions 9, 19, ...) is a test image and the rest train, and
//            Dataset::split_source says so: such numbers are not comparable to published ones.
//   realiad  Real-IAD: ROOT/realiad_jsons/<category>.json (or ROOT/realiad_jsons/realiad_jsons/, the
//            zip's own nesting) holds {"meta": {"normal_class": "OK", ...}, "train": [...],
//            "test": [...]}, each entry {"category", "anomaly_class", "image_path", "mask_path"}
//            with paths relative to ROOT/realiad_<res>/<category>/ (as ADer and anomalib read them);
//            anomaly_class is meta.normal_class ("OK" when absent) for normal images, else a defect
//            code (AK pit, BX deformation, CH abrasion, HS scratch, PS damage, QS missing parts,
//            YW foreign objects, ZW contamination); normal entries have a null mask_path. The image
//            folder is the first of realiad_1024, realiad_512, realiad_256, realiad_raw present
//            unless DatasetOptions names one. Anomalous entries in "train" (the FUIAD noisy-training
//            splits) are errors: focuspatch takes its few-shot references from normal images only.
//   folder   users' own data: ROOT/<category>/good/* are the normal images and every other folder
//            ROOT/<category>/<kind>/* holds anomalous images of the defect kind <kind> (names starting
//            with '.', and the folders train/ and ground_truth/, excepted). A category is a folder of
//            ROOT holding good/. Masks are optional, per kind: ROOT/<category>/ground_truth/<kind>/
//            <stem>_mask.<ext> (or <stem>.<ext>). When a kind has a mask folder, every image of the
//            kind needs its mask and every mask its image, else the load fails naming the file; a
//            kind without one has no pixel ground truth (TestImage::mask empty), and evaluation
//            skips pixel metrics for it and says so. The normal images are split in two: when
//            ROOT/<category>/train/good/ exists, its images are the training images (the few-shot
//            draw and the calibration pool) and all of good/ is tested; without it, good/ sorted by
//            name is dealt out alternately, positions 0, 2, 4, ... to training and 1, 3, 5, ... to
//            testing (so both halves span the whole folder, also when names follow capture time,
//            and the test set does not depend on --seed). Either way a category needs at least one
//            training and one normal test image and one anomalous image.
//
// Everywhere: image files are .png, .jpg, .jpeg or .bmp in any letter case (what io/image.hpp
// decodes; TIFF is not, and a folder of only .tif files is reported as such); names starting with
// '.' are skipped; categories are sorted by name, training images by path and test images by path
// (byte order of the generic path string), so every run sees the same order. Normal test images
// have the defect "good" in every layout and no mask; every anomalous test image has a mask that
// exists, except in the folder layout, where masks are optional. Missing folders, empty image folders, missing masks and malformed split files are errors
// naming the path.
//
// Few-shot sampling: sample_few_shot(category, k, seed) draws k distinct training images with a
// SplitMix64 generator (Steele, Lea & Flood 2014; the constants of Vigna's splitmix64.c) seeded
// with seed XOR FNV-1a-64(category name), a partial Fisher-Yates shuffle of the indices 0..n-1 and
// bounded draws by rejection (no modulo bias), then returns the drawn images in path order. Only
// 64-bit integer arithmetic is involved, so every platform draws the same images; each category's
// draw depends only on its own name, images and the seed, not on which other categories are loaded.
#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/directory_listing.hpp"
#include "focuspatch/io/input_file.hpp"
#include "focuspatch/io/json.hpp"

namespace focuspatch::eval {

enum class DatasetLayout { MVTec, VisA, RealIAD, Folder };

inline std::string_view layout_name(DatasetLayout layout) {
  switch (layout) {
    case DatasetLayout::MVTec: return "mvtec";
    case DatasetLayout::VisA: return "visa";
    case DatasetLayout::RealIAD: return "realiad";
    case DatasetLayout::Folder: return "folder";
  }
  return "unknown";
}

inline DatasetLayout parse_dataset_layout(std::string_view name) {
  for (DatasetLayout layout : {DatasetLayout::MVTec, DatasetLayout::VisA, DatasetLayout::RealIAD, DatasetLayout::Folder})
    if (name == layout_name(layout)) return layout;
  fail("unknown dataset layout '", name, "' (known layouts: mvtec, visa, realiad, folder)");
}

struct TestImage {
  std::filesystem::path image;
  bool anomalous = false;
  std::string defect;           // "good" for normal images
  std::filesystem::path mask;   // empty for normal images, and in the folder layout for kinds without masks

  bool has_pixel_truth() const { return !anomalous || !mask.empty(); }
};

struct Category {
  std::string name;
  std::vector<std::filesystem::path> train_normal;
  std::vector<TestImage> test;

  std::size_t anomalous_test_count() const {
    return static_cast<std::size_t>(std::count_if(test.begin(), test.end(), [](const TestImage& t) { return t.anomalous; }));
  }
};

struct Dataset {
  std::filesystem::path root;
  DatasetLayout layout = DatasetLayout::MVTec;
  std::string split_source;  // where the train/test split came from, for reports
  std::vector<Category> categories;

  const Category& category(std::string_view name) const {
    for (const Category& c : categories)
      if (c.name == name) return c;
    std::string known;
    for (const Category& c : categories) known += (known.empty() ? "" : ", ") + c.name;
    fail(root.string(), ": no category '", name, "' (have: ", known, ")");
  }
};

struct DatasetOptions {
  // Only these categories, in sorted order; each must exist. Empty: every category found.
  std::vector<std::string> categories;
  // Real-IAD: the image folder under ROOT (e.g. "realiad_256"); empty: first of realiad_1024,
  // realiad_512, realiad_256, realiad_raw that exists.
  std::string realiad_images;
  // Real-IAD: the folder under ROOT holding <category>.json; empty: realiad_jsons, or
  // realiad_jsons/realiad_jsons when the former holds no .json file.
  std::string realiad_jsons;
};

namespace detail {

namespace fs = std::filesystem;

inline std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

inline bool is_image_file(const fs::path& p) {
  const std::string ext = lower(p.extension().string());
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}
inline bool is_hidden(const fs::path& p) { return is_hidden_name(p); }  // io/directory_listing.hpp
inline bool path_less(const fs::path& a, const fs::path& b) { return a.generic_string() < b.generic_string(); }

inline bool is_dir(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
inline bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

inline void require_dir(const fs::path& p, std::string_view role) {
  std::error_code ec;
  const bool exists = fs::exists(p, ec);
  require(exists, p.string(), ": ", role, " does not exist");
  require(fs::is_directory(p, ec), p.string(), ": ", role, " is not a directory");
}

// Entries of a directory (files or folders), not hidden, sorted; errors name the directory, or an
// entry that is neither (io/directory_listing.hpp: refused, never skipped).
inline std::vector<fs::path> list_dir(const fs::path& dir, bool want_dirs) {
  std::vector<fs::path> out;
  for (const DirectoryEntry& e : list_directory(dir, /*include_hidden=*/false))
    if (e.is_directory == want_dirs) out.push_back(e.path);
  return out;
}

// The image files of a folder, sorted; the folder must exist and hold at least one.
inline std::vector<fs::path> list_images(const fs::path& dir, std::string_view role) {
  require_dir(dir, role);
  std::vector<fs::path> images;
  std::map<std::string, std::size_t> others;
  for (const fs::path& f : list_dir(dir, false)) {
    if (is_image_file(f)) images.push_back(f);
    else ++others[lower(f.extension().string())];
  }
  if (images.empty()) {
    std::string found;
    for (const auto& [ext, n] : others) found += (found.empty() ? "" : ", ") + std::to_string(n) + " '" + ext + "'";
    fail(dir.string(), ": ", role, " holds no images (.png, .jpg, .jpeg, .bmp)",
         found.empty() ? std::string() : "; it holds only other files: " + found,
         others.count(".tif") || others.count(".tiff") ? " (TIFF cannot be decoded)" : "");
  }
  return images;
}

inline std::string read_text_file(const fs::path& p) {
  // Split files (CSV, JSON) list image paths: even a million entries is well under 1 GiB.
  return read_file_bounded(p.string(), std::uint64_t{1} << 30, "split file");
}

// RFC 4180 CSV: comma-separated, fields optionally in double quotes with "" for a quote, LF or CRLF
// line ends, a UTF-8 byte order mark skipped. Blank lines are dropped. Each row keeps its line number.
struct CsvRow {
  std::size_t line = 0;
  std::vector<std::string> fields;
};

inline std::vector<CsvRow> parse_csv(std::string_view text, const fs::path& what) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::vector<CsvRow> rows;
  CsvRow row;
  std::string field;
  std::size_t line = 1;
  row.line = 1;
  bool quoted = false;
  bool field_was_quoted = false;
  auto end_row = [&] {
    row.fields.push_back(std::move(field));
    field.clear();
    const bool blank = row.fields.size() == 1 && row.fields[0].empty() && !field_was_quoted;
    if (!blank) rows.push_back(std::move(row));
    row = CsvRow{};
    field_was_quoted = false;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"') {
        if (i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          ++i;
        } else {
          quoted = false;
        }
      } else {
        if (c == '\n') ++line;
        field += c;
      }
      continue;
    }
    if (c == '"') {
      require(field.empty() && !field_was_quoted, what.string(), " line ", line, ": stray '\"' inside a field");
      quoted = true;
      field_was_quoted = true;
    } else if (c == ',') {
      row.fields.push_back(std::move(field));
      field.clear();
      field_was_quoted = false;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_row();
      row.line = ++line;
    } else {
      require(!field_was_quoted, what.string(), " line ", line, ": text after a closing '\"'");
      field += c;
    }
  }
  require(!quoted, what.string(), ": a quoted field opened on or before line ", line, " is never closed");
  if (!field.empty() || !row.fields.empty() || field_was_quoted) end_row();
  return rows;
}

// Column positions by header name; the named columns must all be there.
inline std::vector<std::size_t> csv_columns(const CsvRow& header, std::initializer_list<std::string_view> names,
                                            const fs::path& what) {
  std::vector<std::size_t> out;
  for (std::string_view name : names) {
    auto it = std::find(header.fields.begin(), header.fields.end(), name);
    require(it != header.fields.end(), what.string(), ": the header has no column '", name, "'");
    out.push_back(static_cast<std::size_t>(it - header.fields.begin()));
  }
  return out;
}

inline const std::string& csv_field(const CsvRow& row, std::size_t column, const fs::path& what) {
  require(column < row.fields.size(), what.string(), " line ", row.line, ": ", row.fields.size(),
          " fields, expected at least ", column + 1);
  return row.fields[column];
}

inline bool wanted(const DatasetOptions& options, const std::string& name) {
  return options.categories.empty() ||
         std::find(options.categories.begin(), options.categories.end(), name) != options.categories.end();
}

// Checks that every requested category was found, then sorts the categories and their images.
inline void finish_dataset(Dataset& d, const DatasetOptions& options) {
  for (const std::string& name : options.categories) {
    const bool found = std::any_of(d.categories.begin(), d.categories.end(),
                                   [&](const Category& c) { return c.name == name; });
    if (!found) {
      std::string known;
      for (const Category& c : d.categories) known += (known.empty() ? "" : ", ") + c.name;
      fail(d.root.string(), ": no category '", name, "' in this ", layout_name(d.layout), " dataset",
           known.empty() ? std::string() : " (found: " + known + ")");
    }
  }
  require(!d.categories.empty(), d.root.string(), ": no categories found for the ", layout_name(d.layout), " layout");
  std::sort(d.categories.begin(), d.categories.end(), [](const Category& a, const Category& b) { return a.name < b.name; });
  for (Category& c : d.categories) {
    std::sort(c.train_normal.begin(), c.train_normal.end(), path_less);
    std::sort(c.test.begin(), c.test.end(), [](const TestImage& a, const TestImage& b) { return path_less(a.image, b.image); });
  }
}

inline void require_nonempty_splits(const Category& c, const fs::path& where) {
  require(!c.train_normal.empty(), where.string(), ": category '", c.name, "' has no normal training images");
  require(!c.test.empty(), where.string(), ": category '", c.name, "' has no test images");
}

// ---- MVTec AD ----------------------------------------------------------------------------------

// The mask of ground_truth/<defect>/ for an image stem: <stem>_mask.<ext> first, then <stem>.<ext>.
inline std::optional<fs::path> find_mask(const std::vector<fs::path>& masks, const std::string& stem) {
  for (const std::string& want : {stem + "_mask", stem})
    for (const fs::path& m : masks)
      if (m.stem().string() == want && is_image_file(m)) return m;
  return std::nullopt;
}

inline Category load_mvtec_category(const fs::path& dir, const std::string& name) {
  Category c;
  c.name = name;
  c.train_normal = list_images(dir / "train" / "good", "the normal training folder of category '" + name + "'");
  const fs::path test_dir = dir / "test";
  require_dir(test_dir, "the test folder of category '" + name + "'");
  const std::vector<fs::path> defects = list_dir(test_dir, true);
  require(!defects.empty(), test_dir.string(), ": the test folder of category '", name, "' has no defect folders");
  for (const fs::path& defect_dir : defects) {
    const std::string defect = defect_dir.filename().string();
    const std::vector<fs::path> images = list_images(defect_dir, "test folder '" + defect + "'");
    if (defect == "good") {
      for (const fs::path& img : images) c.test.push_back({img, false, "good", {}});
      continue;
    }
    const fs::path gt_dir = dir / "ground_truth" / defect;
    require(is_dir(gt_dir), gt_dir.string(), ": missing; the anomalous test images of '", defect_dir.string(),
            "' need their masks there");
    const std::vector<fs::path> masks = list_dir(gt_dir, false);
    for (const fs::path& img : images) {
      const std::string stem = img.stem().string();
      const std::optional<fs::path> mask = find_mask(masks, stem);
      require(mask.has_value(), img.string(), ": anomalous test image has no mask (expected ",
              (gt_dir / (stem + "_mask.png")).string(), ")");
      c.test.push_back({img, true, defect, *mask});
    }
  }
  return c;
}

inline Dataset load_mvtec(const fs::path& root, const DatasetOptions& options) {
  Dataset d;
  d.root = root;
  d.layout = DatasetLayout::MVTec;
  d.split_source = "folders (train/good, test/<defect>)";
  for (const fs::path& dir : list_dir(root, true)) {
    const std::string name = dir.filename().string();
    if (!wanted(options, name)) continue;
    if (!is_dir(dir / "train") && !is_dir(dir / "test")) continue;  // not a category (e.g. a licence folder)
    d.categories.push_back(load_mvtec_category(dir, name));
  }
  finish_dataset(d, options);
  return d;
}

// ---- VisA --------------------------------------------------------------------------------------

// image path (as written in the CSV, relative to ROOT) -> defect label, from <category>/image_anno.csv.
inline std::map<std::string, std::string> load_visa_annotations(const fs::path& root, const std::string& category) {
  std::map<std::string, std::string> out;
  const fs::path path = root / category / "image_anno.csv";
  if (!is_file(path)) return out;
  const std::vector<CsvRow> rows = parse_csv(read_text_file(path), path);
  if (rows.empty()) return out;
  const std::vector<std::size_t> col = csv_columns(rows[0], {"image", "label"}, path);
  for (std::size_t i = 1; i < rows.size(); ++i)
    out[csv_field(rows[i], col[0], path)] = csv_field(rows[i], col[1], path);
  return out;
}

inline fs::path existing_file(const fs::path& root, const std::string& relative, const fs::path& csv,
                              std::size_t line, std::string_view role) {
  require(!relative.empty(), csv.string(), " line ", line, ": the ", role, " path is empty");
  const fs::path p = root / relative;
  require(is_file(p), csv.string(), " line ", line, ": ", role, " '", p.string(), "' does not exist");
  return p;
}

inline Dataset load_visa_from_csv(const fs::path& root, const fs::path& csv, const DatasetOptions& options) {
  Dataset d;
  d.root = root;
  d.layout = DatasetLayout::VisA;
  d.split_source = "split_csv/1cls.csv";
  const std::vector<CsvRow> rows = parse_csv(read_text_file(csv), csv);
  require(!rows.empty(), csv.string(), ": the split file is empty");
  const std::vector<std::size_t> col = csv_columns(rows[0], {"object", "split", "label", "image", "mask"}, csv);
  std::map<std::string, Category> categories;
  std::map<std::string, std::map<std::string, std::string>> annotations;
  for (std::size_t i = 1; i < rows.size(); ++i) {
    const CsvRow& row = rows[i];
    const std::string& object = csv_field(row, col[0], csv);
    const std::string& split = csv_field(row, col[1], csv);
    const std::string& label = csv_field(row, col[2], csv);
    const std::string& image = csv_field(row, col[3], csv);
    const std::string& mask = csv_field(row, col[4], csv);
    require(!object.empty(), csv.string(), " line ", row.line, ": empty object name");
    if (!wanted(options, object)) continue;
    require(split == "train" || split == "test", csv.string(), " line ", row.line, ": split is '", split,
            "', expected train or test");
    require(label == "normal" || label == "anomaly", csv.string(), " line ", row.line, ": label is '", label,
            "', expected normal or anomaly");
    Category& c = categories[object];
    c.name = object;
    const fs::path image_path = existing_file(root, image, csv, row.line, "image");
    if (split == "train") {
      require(label == "normal", csv.string(), " line ", row.line, ": an anomalous training image ('", image,
              "'); focuspatch trains on normal images only");
      c.train_normal.push_back(image_path);
    } else if (label == "normal") {
      c.test.push_back({image_path, false, "good", {}});
    } else {
      require(!mask.empty(), csv.string(), " line ", row.line, ": anomalous test image '", image, "' has no mask");
      const fs::path mask_path = existing_file(root, mask, csv, row.line, "mask");
      auto [it, fresh] = annotations.try_emplace(object);
      if (fresh) it->second = load_visa_annotations(root, object);
      auto defect = it->second.find(image);
      c.test.push_back({image_path, true, defect != it->second.end() ? defect->second : "anomaly", mask_path});
    }
  }
  for (auto& [name, c] : categories) {
    require_nonempty_splits(c, csv);
    d.categories.push_back(std::move(c));
  }
  finish_dataset(d, options);
  return d;
}

inline Category load_visa_folders_category(const fs::path& root, const std::string& name) {
  Category c;
  c.name = name;
  const fs::path data = root / name / "Data";
  const std::vector<fs::path> normal = list_images(data / "Images" / "Normal", "the normal images of '" + name + "'");
  for (std::size_t i = 0; i < normal.size(); ++i) {
    if (i % 10 == 9) c.test.push_back({normal[i], false, "good", {}});
    else c.train_normal.push_back(normal[i]);
  }
  const fs::path anomaly_dir = data / "Images" / "Anomaly";
  const fs::path mask_dir = data / "Masks" / "Anomaly";
  const std::vector<fs::path> anomalies = list_images(anomaly_dir, "the anomalous images of '" + name + "'");
  const std::map<std::string, std::string> annotations = load_visa_annotations(root, name);
  for (const fs::path& img : anomalies) {
    const fs::path mask = mask_dir / (img.stem().string() + ".png");
    require(is_file(mask), img.string(), ": anomalous image has no mask (expected ", mask.string(), ")");
    const std::string key = img.lexically_relative(root).generic_string();
    auto defect = annotations.find(key);
    c.test.push_back({img, true, defect != annotations.end() ? defect->second : "anomaly", mask});
  }
  require_nonempty_splits(c, root / name);
  return c;
}

inline Dataset load_visa(const fs::path& root, const DatasetOptions& options) {
  const fs::path csv = root / "split_csv" / "1cls.csv";
  if (is_file(csv)) return load_visa_from_csv(root, csv, options);
  Dataset d;
  d.root = root;
  d.layout = DatasetLayout::VisA;
  d.split_source =
      "folders: no split_csv/1cls.csv, so every tenth normal image by name is held out for testing "
      "(not the official VisA split)";
  for (const fs::path& dir : list_dir(root, true)) {
    const std::string name = dir.filename().string();
    if (!wanted(options, name) || !is_dir(dir / "Data" / "Images")) continue;
    d.categories.push_back(load_visa_folders_category(root, name));
  }
  finish_dataset(d, options);
  return d;
}

// ---- Real-IAD ----------------------------------------------------------------------------------

inline bool holds_json(const fs::path& dir) {
  if (!is_dir(dir)) return false;
  for (const fs::path& f : list_dir(dir, false))
    if (lower(f.extension().string()) == ".json") return true;
  return false;
}

inline const json::Value& member(const json::Value& v, std::string_view key, const fs::path& file, std::string_view where) {
  const json::Value* m = v.find(key);
  require(m != nullptr, file.string(), ": ", where, " has no \"", key, "\"");
  return *m;
}

inline const std::string& string_member(const json::Value& v, std::string_view key, const fs::path& file,
                                        std::string_view where) {
  const json::Value& m = member(v, key, file, where);
  require(m.is_string(), file.string(), ": ", where, " \"", key, "\" is ", json::type_name(m.type()),
          ", expected a string");
  return m.as_string();
}

inline Category load_realiad_category(const fs::path& json_file, const fs::path& image_root, const std::string& name) {
  const json::Value doc = json::parse(read_text_file(json_file), json_file.string());
  require(doc.is_object(), json_file.string(), ": expected a JSON object with \"train\" and \"test\" lists");
  std::string normal_class = "OK";
  if (const json::Value* meta = doc.find("meta"); meta && meta->is_object()) {
    if (const json::Value* nc = meta->find("normal_class"); nc && nc->is_string()) normal_class = nc->as_string();
  }
  const fs::path category_dir = image_root / name;
  require_dir(category_dir, "the image folder of Real-IAD category '" + name + "'");
  Category c;
  c.name = name;
  for (const std::string_view split : {"train", "test"}) {
    const json::Value& list = member(doc, split, json_file, "the file");
    require(list.is_array(), json_file.string(), ": \"", split, "\" is ", json::type_name(list.type()),
            ", expected a list");
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string where = std::string(split) + " entry " + std::to_string(i);
      const json::Value& entry = list[i];
      require(entry.is_object(), json_file.string(), ": ", where, " is not an object");
      const std::string& image = string_member(entry, "image_path", json_file, where);
      const std::string& anomaly_class = string_member(entry, "anomaly_class", json_file, where);
      const fs::path image_path = category_dir / image;
      require(is_file(image_path), json_file.string(), ": ", where, ": image '", image_path.string(), "' does not exist");
      const bool anomalous = anomaly_class != normal_class;
      if (split == "train") {
        require(!anomalous, json_file.string(), ": ", where, " is anomalous ('", anomaly_class,
                "'); focuspatch takes few-shot references from normal training images only (use the standard "
                "realiad_jsons split, not a noisy-training one)");
        c.train_normal.push_back(image_path);
        continue;
      }
      if (!anomalous) {
        c.test.push_back({image_path, false, "good", {}});
        continue;
      }
      const json::Value* mask = entry.find("mask_path");
      require(mask && mask->is_string() && !mask->as_string().empty(), json_file.string(), ": ", where,
              ": anomalous image '", image_path.string(), "' has no mask_path");
      const fs::path mask_path = category_dir / mask->as_string();
      require(is_file(mask_path), json_file.string(), ": ", where, ": mask '", mask_path.string(), "' does not exist");
      c.test.push_back({image_path, true, anomaly_class, mask_path});
    }
  }
  require_nonempty_splits(c, json_file);
  return c;
}

inline Dataset load_realiad(const fs::path& root, const DatasetOptions& options) {
  fs::path image_root;
  if (!options.realiad_images.empty()) {
    image_root = root / options.realiad_images;
    require_dir(image_root, "the Real-IAD image folder");
  } else {
    for (const char* candidate : {"realiad_1024", "realiad_512", "realiad_256", "realiad_raw"}) {
      if (is_dir(root / candidate)) {
        image_root = root / candidate;
        break;
      }
    }
    require(!image_root.empty(), root.string(),
            ": no Real-IAD image folder (realiad_1024, realiad_512, realiad_256 or realiad_raw)");
  }
  fs::path json_dir;
  if (!options.realiad_jsons.empty()) {
    json_dir = root / options.realiad_jsons;
    require_dir(json_dir, "the Real-IAD json folder");
  } else {
    json_dir = root / "realiad_jsons";
    if (!holds_json(json_dir) && holds_json(json_dir / "realiad_jsons")) json_dir /= "realiad_jsons";
    require_dir(json_dir, "the Real-IAD json folder");
  }
  Dataset d;
  d.root = root;
  d.layout = DatasetLayout::RealIAD;
  d.split_source = json_dir.lexically_relative(root).generic_string() + "/<category>.json, images in " +
                   image_root.lexically_relative(root).generic_string();
  for (const fs::path& f : list_dir(json_dir, false)) {
    if (lower(f.extension().string()) != ".json") continue;
    const std::string name = f.stem().string();
    if (!wanted(options, name)) continue;
    d.categories.push_back(load_realiad_category(f, image_root, name));
  }
  finish_dataset(d, options);
  return d;
}

// ---- folder (users' own data) --------------------------------------------------------------------

// The defect kind's images, with their masks when ground_truth/<kind>/ exists (then all must match).
inline void load_folder_kind(Category& c, const fs::path& category_dir, const std::string& kind) {
  const std::vector<fs::path> images = list_images(category_dir / kind, "defect folder '" + kind + "' of '" + c.name + "'");
  const fs::path gt_dir = category_dir / "ground_truth" / kind;
  if (!is_dir(gt_dir)) {
    for (const fs::path& img : images) c.test.push_back({img, true, kind, {}});
    return;
  }
  std::vector<fs::path> masks;
  for (const fs::path& m : list_dir(gt_dir, false))
    if (is_image_file(m)) masks.push_back(m);
  std::set<std::string> matched;
  for (const fs::path& img : images) {
    const std::string stem = img.stem().string();
    const std::optional<fs::path> mask = find_mask(masks, stem);
    require(mask.has_value(), img.string(), ": no mask for this image in ", gt_dir.string(), " (expected ", stem,
            "_mask.png); a kind with a ground_truth folder needs a mask for every image");
    matched.insert(mask->string());
    c.test.push_back({img, true, kind, *mask});
  }
  for (const fs::path& m : masks)
    require(matched.count(m.string()) != 0, m.string(), ": mask matches no image of ", (category_dir / kind).string(),
            " (a mask of <stem>.png is named <stem>_mask.png or <stem>.png)");
}

inline Category load_folder_category(const fs::path& dir, const std::string& name, bool& used_train_folder) {
  Category c;
  c.name = name;
  const std::vector<fs::path> good = list_images(dir / "good", "the normal images of '" + name + "'");
  used_train_folder = is_dir(dir / "train");
  if (used_train_folder) {
    c.train_normal = list_images(dir / "train" / "good", "the normal training images of '" + name + "'");
    for (const fs::path& img : good) c.test.push_back({img, false, "good", {}});
  } else {
    require(good.size() >= 2, (dir / "good").string(), ": ", good.size(),
            " normal image; at least 2 are needed (dealt out alternately to the shots and to testing), or put the shots in ",
            (dir / "train" / "good").string());
    for (std::size_t i = 0; i < good.size(); ++i) {
      if (i % 2 == 0) c.train_normal.push_back(good[i]);
      else c.test.push_back({good[i], false, "good", {}});
    }
  }
  std::set<std::string> kinds;
  for (const fs::path& sub : list_dir(dir, true)) {
    const std::string kind = sub.filename().string();
    if (kind == "good" || kind == "train" || kind == "ground_truth") continue;
    kinds.insert(kind);
    load_folder_kind(c, dir, kind);
  }
  require(!kinds.empty(), dir.string(), ": category '", name, "' has good/ but no folder of anomalous images beside it");
  if (is_dir(dir / "ground_truth"))
    for (const fs::path& gt : list_dir(dir / "ground_truth", true))
      require(kinds.count(gt.filename().string()) != 0, gt.string(), ": mask folder of no defect folder (expected ",
              (dir / gt.filename()).string(), ")");
  return c;
}

inline Dataset load_folder(const fs::path& root, const DatasetOptions& options) {
  Dataset d;
  d.root = root;
  d.layout = DatasetLayout::Folder;
  std::vector<std::string> alternating, train_folder;
  for (const fs::path& dir : list_dir(root, true)) {
    const std::string name = dir.filename().string();
    if (!wanted(options, name) || !is_dir(dir / "good")) continue;
    bool used_train_folder = false;
    d.categories.push_back(load_folder_category(dir, name, used_train_folder));
    (used_train_folder ? train_folder : alternating).push_back(name);
  }
  auto joined = [](const std::vector<std::string>& names) {
    std::string s;
    for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
    return s;
  };
  if (!train_folder.empty()) d.split_source = "train/good/ for shots, good/ for testing (" + joined(train_folder) + ")";
  if (!alternating.empty())
    d.split_source += (d.split_source.empty() ? "" : "; ") +
                      std::string("good/ by name, 1st, 3rd, ... image for shots, 2nd, 4th, ... for testing (") +
                      joined(alternating) + ")";
  finish_dataset(d, options);
  return d;
}

inline std::uint64_t fnv1a64(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace detail

inline Dataset load_dataset(const std::filesystem::path& root, DatasetLayout layout, const DatasetOptions& options = {}) {
  detail::require_dir(root, "the dataset root");
  switch (layout) {
    case DatasetLayout::MVTec: return detail::load_mvtec(root, options);
    case DatasetLayout::VisA: return detail::load_visa(root, options);
    case DatasetLayout::RealIAD: return detail::load_realiad(root, options);
    case DatasetLayout::Folder: return detail::load_folder(root, options);
  }
  fail("unknown dataset layout");
}

inline Dataset load_dataset(const std::filesystem::path& root, std::string_view layout,
                            const DatasetOptions& options = {}) {
  return load_dataset(root, parse_dataset_layout(layout), options);
}

// ---- few-shot sampling ---------------------------------------------------------------------------

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

  // Uniform in [0, bound): draws below 2^64 mod bound are rejected so that every value is equally likely.
  std::uint64_t below(std::uint64_t bound) {
    require(bound > 0, "SplitMix64::below(0)");
    const std::uint64_t reject_under = (0 - bound) % bound;
    for (;;) {
      const std::uint64_t r = next();
      if (r >= reject_under) return r % bound;
    }
  }

 private:
  std::uint64_t state_;
};

// k distinct indices of 0..n-1, ascending: the first k places of a Fisher-Yates shuffle driven by
// SplitMix64(seed) (place i swapped with i + below(n - i)). k = 0 gives none; k > n is an error.
inline std::vector<std::size_t> sample_indices(std::size_t n, std::size_t k, std::uint64_t seed) {
  require(k <= n, "cannot draw ", k, " distinct items from ", n);
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  SplitMix64 rng(seed);
  for (std::size_t i = 0; i < k; ++i) {
    const auto j = i + static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(n - i)));
    std::swap(order[i], order[j]);
  }
  order.resize(k);
  std::sort(order.begin(), order.end());
  return order;
}

// k normal training images of the category, drawn as described at the top, in path order.
inline std::vector<std::filesystem::path> sample_few_shot(const Category& category, std::size_t k, std::uint64_t seed) {
  require(k <= category.train_normal.size(), "category '", category.name, "': cannot draw ", k,
          " few-shot images from its ", category.train_normal.size(), " normal training images");
  std::vector<std::filesystem::path> out;
  for (std::size_t i : sample_indices(category.train_normal.size(), k, seed ^ detail::fnv1a64(category.name)))
    out.push_back(category.train_normal[i]);
  return out;
}

}  // namespace focuspatch::eval
