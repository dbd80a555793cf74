#pragma once
// What focuspatch-detect and focuspatch-eval share: loading the model and the prompt bank into a
// Detector from command-line options, and turning file/folder arguments into image lists.
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/cli_args.hpp"
#include "focuspatch/io/directory_listing.hpp"
#include "focuspatch/anomaly/detector.hpp"

namespace focuspatch::tools {

namespace fs = std::filesystem;

inline constexpr const char* kDefaultPromptBank =
#include "default_prompt_bank.inc"
    ;

inline bool is_image_path(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp" || ext == ".tga" || ext == ".gif" || ext == ".pnm" ||
         ext == ".ppm" || ext == ".pgm";
}

// Files as given; folders expanded to their image files, sorted. An empty folder is an error.
inline std::vector<std::string> expand_images(const std::vector<std::string>& paths, const std::string& option) {
  std::vector<std::string> out;
  for (const auto& p : paths) {
    require(fs::exists(p), option, " ", p, ": no such file or folder");
    if (!fs::is_directory(p)) {
      out.push_back(p);
      continue;
    }
    std::vector<std::string> found;
    for (const DirectoryEntry& e : list_directory(p, /*include_hidden=*/false))  // refuses untypeable entries
      if (!e.is_directory && is_image_path(e.path)) found.push_back(e.path.string());
    require(!found.empty(), option, " ", p, ": the folder holds no images (png, jpg, bmp, tga, gif, pnm)");
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

// "CAT=PATH" or "PATH"; without CAT the category is the folder's name, skipping MVTec's
// "train"/"test"/"good" levels (bottle/train/good -> bottle).
inline std::map<std::string, std::vector<std::string>> normal_shots(const std::vector<std::string>& arguments,
                                                                    const std::string& option = "--normal") {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& a : arguments) {
    const auto eq = a.find('=');
    std::string category, path = a;
    if (eq != std::string::npos && !fs::exists(a)) category = a.substr(0, eq), path = a.substr(eq + 1);
    if (category.empty()) {
      fs::path dir = fs::is_directory(path) ? fs::path(path) : fs::path(path).parent_path();
      dir = fs::absolute(dir).lexically_normal();
      if (!dir.has_filename()) dir = dir.parent_path();
      while (dir.has_parent_path() && dir != dir.parent_path() &&
             (dir.filename() == "good" || dir.filename() == "train" || dir.filename() == "test"))
        dir = dir.parent_path();
      category = dir.filename().string();
      require(!category.empty(), option, " ", a, ": cannot tell the category from the path; write CATEGORY=", a);
    }
    for (auto& p : expand_images({path}, option)) out[category].push_back(std::move(p));
  }
  return out;
}

// A finite number, else an error naming the option.
inline double parse_finite(const std::string& text, const std::string& option) {
  std::size_t used = 0;
  double v = NAN;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  require(used == text.size() && !text.empty() && std::isfinite(v), "option ", option, ": '", text, "' is not a finite number");
  return v;
}

// A target rate strictly between 0 and 1, else an error naming the option.
inline double parse_rate(const std::string& text, const std::string& option) {
  const double v = parse_finite(text, option);
  require(v > 0.0 && v < 1.0, "option ", option, ": ", text, " is outside (0, 1); a false-alarm rate such as 0.01 (1 %) is expected");
  return v;
}

// "[CATEGORY=]VALUE" arguments of a repeatable threshold option: category "" = every category.
inline std::map<std::string, double> parse_thresholds(const std::vector<std::string>& arguments, const std::string& option) {
  std::map<std::string, double> out;
  for (const auto& a : arguments) {
    const auto eq = a.find('=');
    const std::string category = eq == std::string::npos ? "" : a.substr(0, eq);
    require(!out.count(category), "option ", option, ": ", category.empty() ? "a threshold for every category" : "category '" + category + "'",
            " is given twice");
    out[category] = parse_finite(eq == std::string::npos ? a : a.substr(eq + 1), option);
  }
  return out;
}

inline void parse_pair(const std::string& text, const std::string& option, float& a, float& b) {
  const auto comma = text.find(',');
  try {
    require(comma != std::string::npos, "");
    std::size_t used_a = 0, used_b = 0;
    a = std::stof(text.substr(0, comma), &used_a);
    b = std::stof(text.substr(comma + 1), &used_b);
    require(used_a == comma && used_b == text.size() - comma - 1, "");
  } catch (const std::exception&) {
    fail("option ", option, ": '", text, "' is not two numbers like 0,1");
  }
  require(b > a, "option ", option, ": ", b, " is not above ", a);
}

// Model + detector from --weights, --prompts, --no-value-value, --suppress-background, --text-weight, --shots-per-batch,
// on the backend --device chose (common/device_option.hpp).
template <class Backend>
class DetectorSetup {
 public:
  DetectorSetup(const cli::Args& args, Backend backend) {
    const auto weights = args.get("weights");
    require(weights.has_value(), "no --weights FILE.fpw given (see --help)");
    model_ = std::make_unique<ClipModel<Backend>>(*weights, std::move(backend));
    DetectorOptions options;
    if (args.has("no-value-value")) options.value_value_blocks = 0;
    if (args.has("suppress-background")) options.suppress_background = true;
    if (auto w = args.get("text-weight")) {
      // One knob for both fusions (map and image score), e.g. 0 = visual memory only, 1 = text only.
      std::size_t used = 0;
      double v = -1;
      try {
        v = std::stod(*w, &used);
      } catch (const std::exception&) {
      }
      require(used == w->size() && v >= 0.0 && v <= 1.0, "option --text-weight: '", *w, "' is not a number in [0, 1]");
      options.text_weight = options.text_score_weight = v;
    }
    if (auto b = args.get_int("shots-per-batch", 1, 256)) options.batch_size = static_cast<int>(*b);
    detector_ = std::make_unique<Detector<Backend>>(*model_, options);
    set_prompt_bank_from(args, *detector_);
  }
  // The keyword prompt bank --prompts names, else the built-in one; also for further detectors
  // over the same model (focuspatch-serve builds one per memory bank reload).
  static void set_prompt_bank_from(const cli::Args& args, Detector<Backend>& detector) {
    if (auto path = args.get("prompts")) {
      detector.set_prompt_bank(load_prompt_bank(*path));
    } else {
      detector.set_prompt_bank(parse_prompt_bank(kDefaultPromptBank, "built-in unified_keywords.txt"), /*stored_first=*/true);
    }
  }
  Detector<Backend>& detector() { return *detector_; }
  ClipModel<Backend>& model() { return *model_; }

 private:
  std::unique_ptr<ClipModel<Backend>> model_;
  std::unique_ptr<Detector<Backend>> detector_;
};

}  // namespace focuspatch::tools
