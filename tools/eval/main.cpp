// focuspatch-eval: few-shot evaluation on a dataset laid out like MVTec AD, VisA or Real-IAD, or
// users' own images in the folder layout.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>

#include "common/cli_args.hpp"
#include "common/image_options.hpp"
#include "common/detector_setup.hpp"
#include "common/decision_output.hpp"
#include "common/device_option.hpp"
#include "eval/eval_outputs.hpp"
#include "focuspatch/anomaly/heatmap_overlay.hpp"
#include "focuspatch/eval/evaluation.hpp"
#include "focuspatch/eval/repeated_runs.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/io/output_file.hpp"

namespace {

namespace fs = std::filesystem;
using namespace focuspatch;

constexpr const char* kUsage = R"(usage: focuspatch-eval --weights FILE.fpw --data ROOT --out DIR [options]

Unified multi-class few-shot evaluation: K normal training images of every category go into one
memory bank and each test image is routed to its category by the detector (the category is not
given). With --per-class, the classic setting: one bank per category, category known.
Each category is calibrated on its normal training images that are not among the shots (never the
test split; leave-one-shot-out when none remain and K >= 2), and the operating point at those
thresholds is reported besides the threshold-free metrics: image precision, recall, F1 and the
false-alarm rate on test/good; pixel precision, recall and IoU.
Writes DIR/results.md (tables), DIR/results.json (metrics, calibrations, every image's score and
verdict), a few overlays and predicted masks per category in DIR/overlays/, and DIR/report.html,
a page with the tables and those images (input, ground truth, heat map, predicted mask; copies in
DIR/report/) that opens offline.

options:
  --weights FILE       a .fpw file made by focuspatch-convert
  --data ROOT          the dataset's root folder
  --layout NAME        mvtec (default), visa, realiad or folder (ROOT/<category>/good/ and a
                       folder per defect kind, masks optional in ground_truth/<kind>/; see README)
  --shots K            normal shots per category (default 4)
  --seed S             seed of the shot draw (default 0)
  --runs N             evaluate N shot draws, seeds S..S+N-1, and report the mean and sample
                       standard deviation of every metric (default 1); the tables, overlays and
                       per-image results are those of the first draw
  --categories a,b     only these categories
  --per-class          one memory bank per category, category known
  --out DIR            output folder (created)
  --overlays N         overlays written per category of anomalous images, and as many of normal
                       ones (default 3; 0 for none)
  --false-alarm-rate A target share of normal images called anomalous (default 0.01)
  --pixel-false-alarm-rate A  share of normal pixels above the pixel threshold (default 0.001)
  --calibration-images N  at most N calibration images per category, drawn from those left
                       after the shots (default: all of them)
  --prompts FILE       the keyword prompt bank (default: stored in the weights, else built in)
  --text-weight W      weight of the text branch in the fused map and the image score (default
                       0.5; 0 = visual memory only, 1 = keyword prompts only)
  --suppress-background  down-weight positions that vary freely across the normal shots (off:
                       it hurt on unaligned objects, see README)
  --no-value-value     text map from the ordinary patch tokens
  --shots-per-batch N  images per forward pass (default 8)
  --quiet              no progress bar
  --max-image-pixels N refuse larger images before decoding them (default 100000000)
  --device D           cpu (default) or cuda[:N], the N-th GPU (default 0)
  --precision P        matrix products: on the CPU f32 (default) or bf16 (AVX512-BF16/AMX,
                       else f32); on a GPU f16 or bf16 (default: bf16 for weights stored
                       in bf16, else f16)
  -h, --help           this text
)";

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    const auto comma = s.find(',', start);
    const std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string percent(double v) { return tools::percent_or_na(v); }

void write_metrics(json::Writer& w, const eval::CategoryResult& c) {
  w.begin_object().member("name", c.name).member("test_images", c.test_images).member("anomalous", c.anomalous);
  w.member("routed_correctly", c.routed_correctly);
  w.member("image_auroc", c.image.auroc).member("image_ap", c.image.average_precision).member("image_f1_max", c.image.f1_max);
  // Pixel metrics are null where no mask exists to measure them against (folder layout).
  using Field = std::pair<const char*, double>;
  for (const auto& [key, v] : {Field{"pixel_auroc", c.pixel.auroc}, Field{"pixel_ap", c.pixel.average_precision},
                               Field{"pixel_f1_max", c.pixel.f1_max}, Field{"aupro", c.aupro}}) {
    w.key(key);
    if (c.pixel_evaluated) w.value(v); else w.null();
  }
  w.member("pixel_evaluated", c.pixel_evaluated).key("kinds_without_masks").begin_array();
  for (const auto& k : c.kinds_without_masks) w.value(k);
  w.end_array().key("shots").begin_array();
  for (const auto& p : c.shots) w.value(p.string());
  w.end_array();
  // The operating point at the calibrated thresholds (null when uncalibrated).
  w.member("calibration", c.calibration).member("image_threshold", c.image_threshold).member("pixel_threshold", c.pixel_threshold);
  w.member("image_precision", c.image_precision).member("image_recall", c.image_recall).member("image_f1", c.image_f1);
  w.member("false_alarm_rate", c.false_alarm_rate).member("pixel_precision", c.pixel_precision).member("pixel_recall", c.pixel_recall);
  w.member("pixel_iou", c.pixel_iou);
  for (const auto& [key, counts] : {std::pair<const char*, const eval::OperatingPoint*>{"image_counts", &c.image_counts}, {"pixel_counts", &c.pixel_counts}})
    w.key(key).begin_object().member("tp", counts->tp).member("fp", counts->fp).member("tn", counts->tn).member("fn", counts->fn).end_object();
  w.key("calibration_images").begin_array();
  for (const auto& p : c.calibration_images) w.value(p.string());
  w.end_array().end_object();
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "-h" || std::string(argv[i]) == "--help") return std::cout << kUsage, 0;
  const cli::Args args(argc, argv,
                       {"weights", "text-weight", "data", "layout", "shots", "seed", "runs", "categories", "out", "overlays", "prompts", "shots-per-batch",
                        "false-alarm-rate", "pixel-false-alarm-rate", "calibration-images",
                        cli::kMaxImagePixelsOption, cli::kDeviceOption, cli::kPrecisionOption},
                       {"per-class", "no-value-value", "suppress-background", "quiet"});
  require(args.positional().empty(), "unexpected argument '", args.positional().empty() ? "" : args.positional()[0], "' (see --help)");
  const auto data_root = args.get("data");
  require(data_root.has_value(), "no --data ROOT given (see --help)");
  const auto out_dir = args.get("out");
  require(out_dir.has_value(), "no --out DIR given (see --help)");
  eval::EvaluationOptions options;
  options.shots = static_cast<std::size_t>(args.get_int("shots", 1, 1000).value_or(4));
  options.seed = static_cast<std::uint64_t>(args.get_int("seed", 0, (1ll << 62)).value_or(0));
  options.per_class = args.has("per-class");
  options.images = cli::image_load_options(args);
  if (auto a = args.get("false-alarm-rate")) options.calibration.false_alarm_rate = tools::parse_rate(*a, "--false-alarm-rate");
  if (auto a = args.get("pixel-false-alarm-rate"))
    options.calibration.pixel_false_alarm_rate = tools::parse_rate(*a, "--pixel-false-alarm-rate");
  options.calibration_images = static_cast<std::size_t>(args.get_int("calibration-images", 1, 1000000).value_or(0));
  const auto overlays = args.get_int("overlays", 0, 1000).value_or(3);
  const auto runs = static_cast<std::size_t>(args.get_int("runs", 1, 1000).value_or(1));
  eval::DatasetOptions data_options;
  if (auto c = args.get("categories")) data_options.categories = split_commas(*c);
  const eval::Dataset data = eval::load_dataset(*data_root, args.get_or("layout", "mvtec"), data_options);

  return cli::with_device(args, args.get_or("weights", ""), [&](auto backend) {
    const std::string device = cli::device_description(backend);
    tools::DetectorSetup setup(args, std::move(backend));
    fs::create_directories(fs::path(*out_dir) / "overlays");
    std::map<std::pair<std::string, bool>, int> written;  // (category, anomalous) -> overlays
    std::map<std::string, std::vector<tools::html::ImageRow>> report_rows;
    eval::EvaluationCallbacks callbacks;
    const bool quiet = args.has("quiet");
    const auto start = std::chrono::steady_clock::now();
    callbacks.progress = [&](std::size_t done, std::size_t total) {
      if (quiet) return;
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const int width = 30, filled = static_cast<int>(width * done / std::max<std::size_t>(1, total));
      std::fprintf(stderr, "\r[%s%s] %zu/%zu images, %.1f s", std::string(static_cast<std::size_t>(filled), '#').c_str(),
                   std::string(static_cast<std::size_t>(width - filled), '.').c_str(), done, total, seconds);
      if (done == total) std::fprintf(stderr, "\n");
    };
    callbacks.on_image = [&](const eval::TestImage& t, const std::string& category, const Image& image, const Detection& d) {
      if (written[{category, t.anomalous}] >= overlays) return;
      const fs::path dir = fs::path(*out_dir) / "overlays" / category;
      fs::create_directories(dir);
      const AnomalyMap map = upsample_bilinear(d.map, image.height, image.width);
      const std::string stem = t.defect + "_" + t.image.stem().string();
      const std::string name = stem + ".png";
      // Decisions at the image's own size, as focuspatch-detect makes them.
      Detection at_image = d;
      setup.detector().decide(at_image, image.width, image.height);
      write_png((dir / name).string(), overlay_decision(image, map, at_image.thresholds, at_image.mask, at_image.verdict,
                                                        at_image.normalized_score, at_image.image_score));
      ++written[{category, t.anomalous}];
      const std::string heat_map = (fs::path("overlays") / category / name).generic_string();
      tools::html::ImageRow row = tools::eval_report_row(*out_dir, category, stem, t, image, d, heat_map, options.images);
      if (!at_image.mask.empty()) {
        const fs::path mask = fs::path("overlays") / category / (stem + "_mask.png");
        write_mask_png((fs::path(*out_dir) / mask).string(), at_image.mask_width, at_image.mask_height, at_image.mask);
        row.predicted_mask = mask.generic_string();
      }
      if (at_image.normalized_score) row.normalized_score = *at_image.normalized_score;
      if (at_image.verdict != Verdict::Uncalibrated) row.anomalous_verdict = at_image.verdict == Verdict::Anomalous;
      report_rows[category].push_back(std::move(row));
    };
    // Run r draws its shots with seed S + r; only the first run writes overlays and report rows.
    std::vector<eval::EvaluationReport> all_runs;
    for (std::size_t run = 0; run < runs; ++run) {
      eval::EvaluationOptions run_options = options;
      run_options.seed = options.seed + run;
      if (runs > 1 && !quiet) std::fprintf(stderr, "run %zu/%zu (seed %llu)\n", run + 1, runs, static_cast<unsigned long long>(run_options.seed));
      all_runs.push_back(eval::evaluate(setup.detector(), data, run_options, run == 0 ? callbacks : eval::EvaluationCallbacks{callbacks.progress, {}}));
    }
    const eval::EvaluationReport& report = all_runs.front();
    const eval::RunsSummary summary = eval::summarize_runs(all_runs);
    std::vector<std::string> notes = tools::pixel_notes(report);
    for (auto& n : tools::calibration_notes(report)) notes.push_back(std::move(n));

    const std::string table = tools::markdown(tools::html_metrics_table(report));
    const double images_per_second = static_cast<double>(report.mean.test_images) / std::max(1e-9, report.detect_seconds);
    std::string md = "# focuspatch-eval\n\nweights `" + args.get_or("weights", "") + "`, data `" + *data_root + "` (" +
                     std::string(eval::layout_name(data.layout)) + ", split: " + data.split_source + "), " + report.setting + " setting, " +
                     std::to_string(report.shots) + " shot(s), seed " + std::to_string(report.seed) + ", device " + device + "\n\n" + table +
                     "\nAll figures in percent. routed: share of test images the detector sent to their own category.\n" +
                     "\n## Operating point at the calibrated thresholds\n\n" + tools::markdown(tools::operating_point_table(report)) +
                     "\nThresholds calibrated on normal training images outside the shots, at a false-alarm rate of " +
                     percent(options.calibration.false_alarm_rate) + " % (pixels: " + percent(options.calibration.pixel_false_alarm_rate) +
                     " %); an image or pixel is anomalous when its score is above the threshold. false alarms: share of test/good images "
                     "called anomalous. '-': uncalibrated (no normal images left and fewer than 2 shots), or undefined.\n";
    for (const auto& n : notes) md += "\n" + n + "\n";
    if (runs > 1)
      md += "\n## " + std::to_string(runs) + " shot draws (seeds " + std::to_string(options.seed) + ".." +
            std::to_string(options.seed + runs - 1) + "): mean ± sample standard deviation (divisor N-1), in percent\n\n" +
            tools::markdown(tools::html_runs_table(summary));
    char timing[256];
    std::snprintf(timing, sizeof timing,
                  "\nmemory bank: %.2f s; keyword prompts: %.2f s; calibration: %.2f s; detection: %.2f s for %zu images (%.2f images/s)\n",
                  report.memory_seconds, report.prompt_seconds, report.calibration_seconds, report.detect_seconds, report.mean.test_images,
                  images_per_second);
    md += timing;
    write_file(fs::path(*out_dir) / "results.md", md);

    json::Writer w(1);
    w.begin_object().member("weights", args.get_or("weights", "")).member("data", *data_root).member("device", device);
    w.member("layout", std::string(eval::layout_name(data.layout))).member("setting", report.setting);
    w.member("shots", report.shots).member("seed", report.seed);
    w.member("memory_seconds", report.memory_seconds).member("prompt_seconds", report.prompt_seconds);
    w.member("detect_seconds", report.detect_seconds).member("calibration_seconds", report.calibration_seconds);
    w.member("false_alarm_rate_target", options.calibration.false_alarm_rate);
    w.member("pixel_false_alarm_rate_target", options.calibration.pixel_false_alarm_rate);
    w.key("calibration").begin_object();
    for (const auto& c : report.categories) {
      w.key(c.name);
      tools::write_calibration(w, c.calibration_details ? &*c.calibration_details : nullptr, c.thresholds);
    }
    w.end_object();
    w.member("images_per_second", images_per_second);
    w.key("categories").begin_array();
    for (const auto& c : report.categories) write_metrics(w, c);
    w.end_array().key("mean");
    write_metrics(w, report.mean);
    w.key("images").begin_array();
    for (const auto& i : report.images) {
      w.begin_object().member("path", i.path.string()).member("category", i.category).member("routed", i.routed);
      w.member("defect", i.defect).member("anomalous", i.anomalous).member("score", i.score);
      w.member("text_score", i.text_score).member("visual_score", i.visual_score).member("verdict", i.verdict).end_object();
    }
    w.end_array();
    w.key("notes").begin_array();
    for (const auto& n : notes) w.value(n);
    w.end_array();
    tools::write_runs_json(w, all_runs, summary);
    w.end_object();
    const fs::path json_path = fs::path(*out_dir) / "results.json";
    write_file(json_path, w.str() + "\n");

    const std::vector<std::string> facts = {"weights: " + args.get_or("weights", ""),
                                            "data: " + *data_root + " (" + std::string(eval::layout_name(data.layout)) + ", split: " + data.split_source + ")",
                                            "seed " + std::to_string(report.seed) + ", device " + device};
    const fs::path html_path = fs::path(*out_dir) / "report.html";
    write_file(html_path, tools::html::render_html(tools::eval_html_report(report, summary, facts, std::move(report_rows))));

    std::cout << table << "\n" << tools::markdown(tools::operating_point_table(report)) << timing;
    for (const auto& n : notes) std::cout << n << "\n";
    if (runs > 1) std::cout << "\nmean ± sample std over " << runs << " shot draws:\n" << tools::markdown(tools::html_runs_table(summary));
    std::cout << "wrote " << (fs::path(*out_dir) / "results.md").string() << ", " << json_path.string() << ", overlays in "
              << (fs::path(*out_dir) / "overlays").string() << " and " << html_path.string() << "\n";
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) { return focuspatch::cli::guarded_main("focuspatch-eval", argc, argv, run); }
