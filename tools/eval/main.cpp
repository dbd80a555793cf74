// focuspatch-eval: few-shot evaluation on a dataset laid out like MVTec AD, VisA or Real-IAD.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include "common/cli_args.hpp"
#include "common/image_options.hpp"
#include "common/detector_setup.hpp"
#include "common/device_option.hpp"
#include "focuspatch/anomaly/heatmap_overlay.hpp"
#include "focuspatch/eval/evaluation.hpp"
#include "focuspatch/io/json.hpp"

namespace {

namespace fs = std::filesystem;
using namespace focuspatch;

constexpr const char* kUsage = R"(usage: focuspatch-eval --weights FILE.fpw --data ROOT --out DIR [options]

Unified multi-class few-shot evaluation: K normal training images of every category go into one
memory bank and each test image is routed to its category by the detector (the category is not
given). With --per-class, the classic setting: one bank per category, category known.
Writes DIR/results.md (table), DIR/results.json (metrics and every image's score) and a few
heat-map overlays per category in DIR/overlays/.

options:
  --weights FILE       a .fpw file made by focuspatch-convert
  --data ROOT          the dataset's root folder
  --layout NAME        mvtec (default), visa or realiad
  --shots K            normal shots per category (default 4)
  --seed S             seed of the shot draw (default 0)
  --categories a,b     only these categories
  --per-class          one memory bank per category, category known
  --out DIR            output folder (created)
  --overlays N         overlays written per category (default 3; 0 for none)
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

std::string percent(double v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.1f", 100.0 * v);
  return buf;
}

std::string markdown_table(const eval::EvaluationReport& r) {
  std::string s = "| category | images | routed | I-AUROC | I-AP | I-F1max | P-AUROC | P-AP | P-F1max | AUPRO |\n";
  s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  auto row = [&](const eval::CategoryResult& c) {
    s += "| " + c.name + " | " + std::to_string(c.test_images) + " | " +
         percent(static_cast<double>(c.routed_correctly) / static_cast<double>(std::max<std::size_t>(1, c.test_images))) + " | " +
         percent(c.image.auroc) + " | " + percent(c.image.average_precision) + " | " + percent(c.image.f1_max) + " | " +
         percent(c.pixel.auroc) + " | " + percent(c.pixel.average_precision) + " | " + percent(c.pixel.f1_max) + " | " +
         percent(c.aupro) + " |\n";
  };
  for (const auto& c : r.categories) row(c);
  row(r.mean);
  return s;
}

void write_metrics(json::Writer& w, const eval::CategoryResult& c) {
  w.begin_object().member("name", c.name).member("test_images", c.test_images).member("anomalous", c.anomalous);
  w.member("routed_correctly", c.routed_correctly);
  w.member("image_auroc", c.image.auroc).member("image_ap", c.image.average_precision).member("image_f1_max", c.image.f1_max);
  w.member("pixel_auroc", c.pixel.auroc).member("pixel_ap", c.pixel.average_precision).member("pixel_f1_max", c.pixel.f1_max);
  w.member("aupro", c.aupro).key("shots").begin_array();
  for (const auto& p : c.shots) w.value(p.string());
  w.end_array().end_object();
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "-h" || std::string(argv[i]) == "--help") return std::cout << kUsage, 0;
  const cli::Args args(argc, argv,
                       {"weights", "text-weight", "data", "layout", "shots", "seed", "categories", "out", "overlays", "prompts", "shots-per-batch",
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
  const auto overlays = args.get_int("overlays", 0, 1000).value_or(3);
  eval::DatasetOptions data_options;
  if (auto c = args.get("categories")) data_options.categories = split_commas(*c);
  const eval::Dataset data = eval::load_dataset(*data_root, args.get_or("layout", "mvtec"), data_options);

  return cli::with_device(args, args.get_or("weights", ""), [&](auto backend) {
    const std::string device = cli::device_description(backend);
    tools::DetectorSetup setup(args, std::move(backend));
    fs::create_directories(fs::path(*out_dir) / "overlays");
    std::map<std::string, int> written;
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
      if (!t.anomalous || written[category] >= overlays) return;
      const fs::path dir = fs::path(*out_dir) / "overlays" / category;
      fs::create_directories(dir);
      const AnomalyMap map = upsample_bilinear(d.map, image.height, image.width);
      const std::string name = t.defect + "_" + t.image.stem().string() + ".png";
      write_png((dir / name).string(), overlay_heatmap(image, map, 0.0f, 1.0f));
      ++written[category];
    };
    const eval::EvaluationReport report = eval::evaluate(setup.detector(), data, options, callbacks);

    const std::string table = markdown_table(report);
    const double images_per_second = static_cast<double>(report.mean.test_images) / std::max(1e-9, report.detect_seconds);
    std::string md = "# focuspatch-eval\n\nweights `" + args.get_or("weights", "") + "`, data `" + *data_root + "` (" +
                     std::string(eval::layout_name(data.layout)) + ", split: " + data.split_source + "), " + report.setting + " setting, " +
                     std::to_string(report.shots) + " shot(s), seed " + std::to_string(report.seed) + ", device " + device + "\n\n" + table +
                     "\nAll figures in percent. routed: share of test images the detector sent to their own category.\n";
    char timing[256];
    std::snprintf(timing, sizeof timing, "\nmemory bank: %.2f s; keyword prompts: %.2f s; detection: %.2f s for %zu images (%.2f images/s)\n",
                  report.memory_seconds, report.prompt_seconds, report.detect_seconds, report.mean.test_images, images_per_second);
    md += timing;
    std::ofstream(fs::path(*out_dir) / "results.md") << md;

    json::Writer w(1);
    w.begin_object().member("weights", args.get_or("weights", "")).member("data", *data_root).member("device", device);
    w.member("layout", std::string(eval::layout_name(data.layout))).member("setting", report.setting);
    w.member("shots", report.shots).member("seed", report.seed);
    w.member("memory_seconds", report.memory_seconds).member("prompt_seconds", report.prompt_seconds);
    w.member("detect_seconds", report.detect_seconds);
    w.member("images_per_second", images_per_second);
    w.key("categories").begin_array();
    for (const auto& c : report.categories) write_metrics(w, c);
    w.end_array().key("mean");
    write_metrics(w, report.mean);
    w.key("images").begin_array();
    for (const auto& i : report.images) {
      w.begin_object().member("path", i.path.string()).member("category", i.category).member("routed", i.routed);
      w.member("defect", i.defect).member("anomalous", i.anomalous).member("score", i.score);
      w.member("text_score", i.text_score).member("visual_score", i.visual_score).end_object();
    }
    w.end_array().end_object();
    const fs::path json_path = fs::path(*out_dir) / "results.json";
    std::ofstream f(json_path, std::ios::binary);
    f << w.str() << "\n";
    require(f.good(), json_path.string(), ": write failed");

    std::cout << table << timing << "wrote " << (fs::path(*out_dir) / "results.md").string() << ", " << json_path.string() << " and overlays in "
              << (fs::path(*out_dir) / "overlays").string() << "\n";
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) { return focuspatch::cli::guarded_main("focuspatch-eval", argc, argv, run); }
