// focuspatch-detect: few-shot anomaly detection on images with one model for every category.
#include <cmath>
#include <filesystem>
#include <set>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "common/cli_args.hpp"
#include "common/image_options.hpp"
#include "common/detector_setup.hpp"
#include "common/device_option.hpp"
#include "focuspatch/anomaly/heatmap_overlay.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/io/npy.hpp"

namespace {

namespace fs = std::filesystem;

constexpr const char* kUsage = R"(usage: focuspatch-detect --weights FILE.fpw --normal [CATEGORY=]PATH... --image PATH... --out DIR [options]

Builds a memory bank from normal images (a few per category; one bank for all categories), then
scores each image: the category it is routed to, an image score, the top anomaly keywords, and
an anomaly map. Writes per image DIR/<name>_overlay.png (heat map over the image) and
DIR/<name>_map.npy (float32 map at the image's size), and DIR/results.json.

options:
  --weights FILE       a .fpw file made by focuspatch-convert
  --normal [CAT=]PATH  normal image(s): a file or a folder of images. Without CAT= the category is
                       the folder's name (for MVTec's CAT/train/good, CAT); repeat for more
  --image PATH         image(s) to inspect: a file or a folder; repeat for more
  --out DIR            output folder (created)
  --memory FILE        load the memory bank from FILE when it exists (then --normal is optional),
                       else build it and save it there
  --prompts FILE       the keyword prompt bank (default: keyword embeddings stored in the weights
                       when present, else the bank built into this program,
                       weights/prompts/unified_keywords.txt of the source tree)
  --shots-per-batch N  images per forward pass (default 8)
  --text-weight W      weight of the text branch in the fused map and the image score (default
                       0.5; 0 = visual memory only, 1 = keyword prompts only)
  --suppress-background  down-weight positions that vary freely across the normal shots (off:
                       it hurt on unaligned objects, see README)
  --no-value-value     text map from the ordinary patch tokens instead of the value-value path
  --scale LO,HI        colour scale of the overlays (default: 0,1)
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
                        cli::kMaxImagePixelsOption, cli::kDeviceOption, cli::kPrecisionOption},
                       {"no-value-value", "suppress-background"});
  require(args.positional().empty(), "unexpected argument '", args.positional().empty() ? "" : args.positional()[0], "' (see --help)");
  const auto out_dir = args.get("out");
  require(out_dir.has_value(), "no --out DIR given (see --help)");
  const auto images = tools::expand_images(args.all("image"), "--image");
  require(!images.empty(), "no --image given: nothing to inspect");
  float lo = 0.0f, hi = 1.0f;
  if (auto s = args.get("scale")) tools::parse_pair(*s, "--scale", lo, hi);
  const ImageLoadOptions image_options = cli::image_load_options(args);

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
    for (const auto& [category, paths] : tools::normal_shots(normals)) {
      std::vector<Image> shots;
      std::vector<std::string> names;
      for (const auto& p : paths) shots.push_back(load_image(p, image_options)), names.push_back(p);
      detector.add_normal(category, shots, names);
      std::cerr << "memory: " << category << " <- " << paths.size() << " normal image(s)\n";
    }
    if (memory && !normals.empty()) {
      detector.memory().save(*memory);
      std::cerr << "saved memory bank " << *memory << "\n";
    }

    fs::create_directories(*out_dir);
    json::Writer w(1);
    w.begin_object().member("weights", args.get_or("weights", "")).member("device", device).key("images").begin_array();
    std::set<std::string> used_names;
    for (const auto& path : images) {
      const Image image = load_image(path, image_options);
      const Detection d = detector.detect(std::span<const Image>(&image, 1)).front();
      const AnomalyMap map = upsample_bilinear(d.map, image.height, image.width);
      std::string stem = fs::path(path).stem().string();
      for (int k = 2; !used_names.insert(stem).second; ++k) stem = fs::path(path).stem().string() + "_" + std::to_string(k);
      const fs::path overlay = fs::path(*out_dir) / (stem + "_overlay.png");
      const fs::path raw = fs::path(*out_dir) / (stem + "_map.npy");
      write_png(overlay.string(), overlay_heatmap(image, map, lo, hi));
      write_npy(raw.string(), {image.height, image.width}, map.values);
      w.begin_object().member("path", path).member("category", d.route.category).member("route_similarity", d.route.similarity);
      w.key("route_margin");  // null when the bank holds one category: there is no runner-up
      if (std::isfinite(d.route.margin)) w.value(d.route.margin); else w.null();
      w.member("score", d.image_score).member("text_score", d.text_score).member("visual_score", d.visual_score);
      w.key("top_keywords").begin_array();
      for (const auto& k : d.top_keywords) w.begin_object().member("keyword", k.name).member("score", k.score).end_object();
      w.end_array().member("overlay", overlay.string()).member("map", raw.string()).end_object();
      std::cout << path << ": " << d.route.category << ", score " << d.image_score
                << (d.top_keywords.empty() ? "" : ", top keyword '" + d.top_keywords.front().name + "'") << "\n";
    }
    w.end_array().end_object();
    const fs::path results = fs::path(*out_dir) / "results.json";
    std::ofstream f(results, std::ios::binary);
    f << w.str() << "\n";
    require(f.good(), results.string(), ": write failed");
    std::cout << "wrote " << images.size() << " overlay(s), maps and " << results.string() << "\n";
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) { return focuspatch::cli::guarded_main("focuspatch-detect", argc, argv, run); }
