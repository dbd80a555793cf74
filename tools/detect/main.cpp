// focuspatch-detect: few-shot anomaly detection on images with one model for every category.
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>
#include <iostream>
#include <string>
#include <vector>

#include "common/cli_args.hpp"
#include "common/image_options.hpp"
#include "common/detector_setup.hpp"
#include "common/decision_output.hpp"
#include "common/device_option.hpp"
#include "detect/detect_report.hpp"
#include "focuspatch/anomaly/heatmap_overlay.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/io/output_file.hpp"
#include "focuspatch/io/npy.hpp"

namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage = R"(usage: focuspatch-detect --weights FILE.fpw --normal [CATEGORY=]PATH... --image PATH... --out DIR [options]

Builds a memory bank from normal images (a few per category; one bank for all categories),
calibrates each category on normal images only, then inspects each image: the category it is
routed to, its raw and normalized score, the verdict (anomalous / normal / uncalibrated), the
defect regions and the top anomaly keywords. Writes per image DIR/<name>_overlay.png (heat map on
the category's calibrated colour scale, region outlines, verdict), DIR/<name>_mask.png (the binary
mask, 255 = above the pixel threshold), DIR/<name>_map.npy (float32 map at the image's size),
DIR/<name>_image.png (a copy of the input for the report), DIR/results.json, and DIR/report.html
(every image with its heat map, mask, score and verdict; opens offline from DIR).

Calibration, per category (stored in the --memory bank with its thresholds):
  - with --calibration images: they are scored against the bank; the image threshold is the
    ceil((1 - a)(n + 1))-th smallest of their n scores (a = --false-alarm-rate), so about a of
    normal images score above it; n images cannot resolve rates below 1/(n + 1) (said in the output);
  - else, with k >= 2 shots added in this run: leave-one-shot-out (each shot against the others);
  - else the thresholds stored in a loaded --memory bank; else the category is uncalibrated.
  The pixel threshold is the same quantile of the normal images' map pixels at
  --pixel-false-alarm-rate. The normalized score is 0.5 at the threshold (see the README).

options:
  --weights FILE       a .fpw file made by focuspatch-convert
  --normal [CAT=]PATH  normal image(s): a file or a folder of images. Without CAT= the category is
                       the folder's name (for MVTec's CAT/train/good, CAT); repeat for more
  --image PATH         image(s) to inspect: a file or a folder; repeat for more
  --out DIR            output folder (created)
  --memory FILE        load the memory bank from FILE when it exists (then --normal is optional),
                       else build it and save it there (saved again when calibrated anew)
  --calibration [CAT=]PATH  normal images NOT in the bank (file or folder; category as for
                       --normal), scored to calibrate the category's thresholds; repeatable
  --false-alarm-rate A target share of normal images called anomalous (default 0.01); for a
                       bank calibrated earlier, its image thresholds are re-derived from the
                       stored scores (and the bank saved again)
  --pixel-false-alarm-rate A  share of normal pixels above the pixel threshold (default 0.001)
  --threshold [CAT=]T  image threshold on the raw score, replacing the calibrated one (all
                       categories, or CAT only; repeatable; not saved in the bank)
  --pixel-threshold [CAT=]T  the same for the pixel threshold on the map
  --prompts FILE       the keyword prompt bank (default: keyword embeddings stored in the weights
                       when present, else the bank built into this program,
                       weights/prompts/unified_keywords.txt of the source tree)
  --shots-per-batch N  images per forward pass (default 8)
  --text-weight W      weight of the text branch in the fused map and the image score (default
                       0.5; 0 = visual memory only, 1 = keyword prompts only)
  --suppress-background  down-weight positions that vary freely across the normal shots (off:
                       it hurt on unaligned objects, see README)
  --no-value-value     text map from the ordinary patch tokens instead of the value-value path
  --scale LO,HI        a fixed colour scale for the overlays (default: anchored to the
                       calibration: normal level cold, pixel threshold in the middle)
  --max-image-pixels N refuse larger images before decoding them (default 100000000)
  --device D           cpu (default) or cuda[:N], the N-th GPU (default 0)
  --precision P        matrix products: on the CPU f32 (default) or bf16 (AVX512-BF16/AMX,
                       else f32); on a GPU f16 or bf16 (default: bf16 for weights stored
                       in bf16, else f16)
  -h, --help           this text
)";

int run(int argc, char** argv) {
  using namespace focuspatch;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "-h" || std::string(argv[i]) == "--help") return std::cout << kUsage, 0;
  const cli::Args args(argc, argv, {"weights", "text-weight", "normal", "image", "out", "memory", "prompts", "shots-per-batch", "scale",
                        "calibration", "false-alarm-rate", "pixel-false-alarm-rate", "threshold", "pixel-threshold",
                        cli::kMaxImagePixelsOption, cli::kDeviceOption, cli::kPrecisionOption},
                       {"no-value-value", "suppress-background"});
  require(args.positional().empty(), "unexpected argument '", args.positional().empty() ? "" : args.positional()[0], "' (see --help)");
  const auto out_dir = args.get("out");
  require(out_dir.has_value(), "no --out DIR given (see --help)");
  const auto images = tools::expand_images(args.all("image"), "--image");
  require(!images.empty(), "no --image given: nothing to inspect");
  std::optional<std::pair<float, float>> scale;
  if (auto s = args.get("scale")) {
    float lo = 0.0f, hi = 1.0f;
    tools::parse_pair(*s, "--scale", lo, hi);
    scale = std::pair(lo, hi);
  }
  const ImageLoadOptions image_options = cli::image_load_options(args);
  CalibrationOptions calibration_options;
  if (auto a = args.get("false-alarm-rate")) calibration_options.false_alarm_rate = tools::parse_rate(*a, "--false-alarm-rate");
  if (auto a = args.get("pixel-false-alarm-rate"))
    calibration_options.pixel_false_alarm_rate = tools::parse_rate(*a, "--pixel-false-alarm-rate");
  const auto image_thresholds = tools::parse_thresholds(args.all("threshold"), "--threshold");
  const auto pixel_thresholds = tools::parse_thresholds(args.all("pixel-threshold"), "--pixel-threshold");
  // Expanded before the model loads, so an empty or missing folder is reported at once.
  const auto calibration_sets = tools::normal_shots(args.all("calibration"), "--calibration");

  return cli::with_device(args, args.get_or("weights", ""), [&](auto backend) {
    const std::string device = cli::device_description(backend);
    tools::DetectorSetup setup(args, std::move(backend));
    auto& detector = setup.detector();
    const auto memory = args.get("memory");
    if (memory && fs::exists(*memory)) {
      detector.set_memory(MemoryBank::load(*memory, detector.weights_id(detector.model())));
      std::cerr << "loaded memory bank " << *memory << " (" << detector.memory().categories().size() << " categories)\n";
    }
    const auto normals = args.all("normal");
    require(!normals.empty() || !detector.memory().empty(), "no --normal images and no existing --memory bank: the detector needs a ",
            "few normal images per category");
    std::set<std::string> added;
    for (const auto& [category, paths] : tools::normal_shots(normals)) {
      std::vector<Image> shots;
      std::vector<std::string> names;
      for (const auto& p : paths) shots.push_back(load_image(p, image_options)), names.push_back(p);
      detector.add_normal(category, shots, names);
      added.insert(category);
      std::cerr << "memory: " << category << " <- " << paths.size() << " normal image(s)\n";
    }

    // Calibration: held-out images, else leave-one-shot-out for shots added now, else what the
    // bank holds, else none (said plainly).
    bool calibrated_now = false;
    for (const auto& [category, paths] : calibration_sets) {
      require(detector.memory().has_category(category), "--calibration ", paths.front(), ": category '", category,
              "' is not in the memory bank (give its --normal shots)");
      detector.calibrate(category, paths, [&](std::size_t i) { return load_image(paths[i], image_options); }, calibration_options);
      calibrated_now = true;
    }
    for (const auto& category : detector.memory().categories()) {
      if (calibration_sets.count(category) || !added.count(category) || detector.memory().shot_count(category) < 2) continue;
      detector.calibrate_leave_one_shot_out(category, calibration_options);
      calibrated_now = true;
    }
    for (const auto& [category, t] : image_thresholds) {
      require(category.empty() || detector.memory().has_category(category), "option --threshold: no category '", category, "' in the memory bank");
      detector.set_threshold_override(category, t, std::nullopt);
    }
    for (const auto& [category, t] : pixel_thresholds) {
      require(category.empty() || detector.memory().has_category(category), "option --pixel-threshold: no category '", category,
              "' in the memory bank");
      detector.set_threshold_override(category, std::nullopt, t);
    }
    // A new --false-alarm-rate for a category calibrated earlier: its threshold is re-derived from
    // the scores stored in the bank (nothing is scored again).
    bool rederived = false;
    for (const auto& category : detector.memory().categories()) {
      const CategoryCalibration* c = detector.memory().calibration(category);
      if (!args.has("false-alarm-rate") || !c || c->false_alarm_rate == calibration_options.false_alarm_rate) continue;
      detector.memory().set_calibration(category, c->at_false_alarm_rate(calibration_options.false_alarm_rate));
      std::cerr << category << ": image threshold re-derived from the " << c->image_scores.size() << " stored calibration scores at "
                << "--false-alarm-rate " << calibration_options.false_alarm_rate << "\n";
      rederived = true;
    }
    if (args.has("pixel-false-alarm-rate") && !calibrated_now)
      std::cerr << "note: --pixel-false-alarm-rate applies when calibrating (--calibration, or new shots): the bank does not store "
                   "the normal pixels, so its pixel thresholds are kept\n";
    calibrated_now |= rederived;
    for (const auto& category : detector.memory().categories())
      std::cerr << tools::calibration_summary(category, detector.memory().calibration(category), detector.thresholds(category)) << "\n";
    if (memory && (!normals.empty() || calibrated_now)) {
      detector.memory().save(*memory);
      std::cerr << "saved memory bank " << *memory << "\n";
    }

    fs::create_directories(*out_dir);
    json::Writer w(1);
    w.begin_object().member("weights", args.get_or("weights", "")).member("device", device).key("calibration").begin_object();
    for (const auto& category : detector.memory().categories()) {
      w.key(category);
      tools::write_calibration(w, detector.memory().calibration(category), detector.thresholds(category));
    }
    w.end_object().key("images").begin_array();
    std::set<std::string> used_names;
    tools::DetectReport report;
    for (const auto& path : images) {
      const Image image = load_image(path, image_options);
      const Detection d = detector.detect(std::span<const Image>(&image, 1)).front();
      const AnomalyMap map = upsample_bilinear(d.map, image.height, image.width);
      std::string stem = fs::path(path).stem().string();
      for (int k = 2; !used_names.insert(stem).second; ++k) stem = fs::path(path).stem().string() + "_" + std::to_string(k);
      const fs::path overlay = fs::path(*out_dir) / (stem + "_overlay.png");
      const fs::path raw = fs::path(*out_dir) / (stem + "_map.npy");
      const fs::path mask = fs::path(*out_dir) / (stem + "_mask.png");
      write_png(overlay.string(), overlay_decision(image, map, d.thresholds, d.mask, d.verdict, d.normalized_score, d.image_score, scale));
      write_npy(raw.string(), {image.height, image.width}, map.values);
      if (!d.mask.empty()) write_mask_png(mask.string(), d.mask_width, d.mask_height, d.mask);
      tools::html::ImageRow row;
      row.label = path;
      row.image = stem + "_image.png";
      row.heat_map = overlay.filename().string();
      if (!d.mask.empty()) row.predicted_mask = mask.filename().string();
      write_png((fs::path(*out_dir) / row.image).string(), image);
      report.add(path, d, std::move(row));
      w.begin_object().member("path", path).member("category", d.route.category).member("route_similarity", d.route.similarity);
      w.key("route_margin");  // null when the bank holds one category: there is no runner-up
      if (std::isfinite(d.route.margin)) w.value(d.route.margin); else w.null();
      w.member("score", d.image_score).key("normalized_score");
      if (d.normalized_score) w.value(*d.normalized_score); else w.null();
      w.member("verdict", verdict_name(d.verdict)).member("text_score", d.text_score).member("visual_score", d.visual_score);
      w.key("mask");
      if (d.mask.empty()) w.null(); else w.value(mask.string());
      w.key("regions");
      tools::write_regions(w, d.regions);
      w.key("top_keywords").begin_array();
      for (const auto& k : d.top_keywords) w.begin_object().member("keyword", k.name).member("score", k.score).end_object();
      w.end_array().member("overlay", overlay.string()).member("map", raw.string()).end_object();
      std::cout << path << ": " << d.route.category << ", " << verdict_label(d.verdict, d.normalized_score, d.image_score) << " (raw score "
                << d.image_score << ", " << d.regions.size() << " region(s))"
                << (d.top_keywords.empty() ? "" : ", top keyword '" + d.top_keywords.front().name + "'") << "\n";
    }
    w.end_array().end_object();
    const fs::path results = fs::path(*out_dir) / "results.json";
    write_file(results, w.str() + "\n");
    const fs::path html_path = fs::path(*out_dir) / "report.html";
    // Each category's calibration (method, thresholds, and what too few normal images cannot vouch for) heads the page.
    std::vector<std::string> notes;
    for (const auto& category : detector.memory().categories())
      notes.push_back(tools::calibration_summary(category, detector.memory().calibration(category), detector.thresholds(category)));
    write_file(html_path, report.render({"weights: " + args.get_or("weights", ""), "device: " + device}, std::move(notes)));
    std::cout << "wrote " << images.size() << " overlay(s), maps, " << results.string() << " and " << html_path.string() << "\n";
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) { return focuspatch::cli::guarded_main("focuspatch-detect", argc, argv, run); }
