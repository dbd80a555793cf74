// The README's C++ example: zero-shot CLIP scoring of one image against a few texts, then few-shot
// anomaly detection with the FocusPatch detector. Built with the project so it cannot go stale.
//   embed_and_score WEIGHTS.fpw NORMAL.png [NORMAL2.png ...] -- TEST.png
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include <focuspatch/anomaly/detector.hpp>

int main(int argc, char** argv) try {
  using namespace focuspatch;
  if (argc < 5) {
    std::cerr << "usage: " << argv[0] << " WEIGHTS.fpw NORMAL.png... -- TEST.png\n";
    return 2;
  }
  ClipModel<> model(argv[1]);  // memory-maps the file; nothing is copied that need not be

  // 1. CLIP: embeddings of an image and of texts, compared by cosine.
  const Image test = load_image(argv[argc - 1]);
  ClipPreprocess pp;
  pp.resolution = model.config().vision.image_size;
  const FloatTensor pixels = preprocess_clip(test, pp);  // resize, centre crop, normalize
  const VisionOutput image = model.encode_images(pixels.values(), 1);
  const std::vector<std::string> texts = {"a photo of a flawless washer", "a photo of a scratched washer"};
  const FloatTensor text = model.encode_texts(texts);
  const std::int64_t D = model.config().embed_dim;
  for (std::int64_t t = 0; t < 2; ++t) {
    double dot = 0, ni = 0, nt = 0;
    for (std::int64_t k = 0; k < D; ++k) {
      const double a = image.image_embeddings.data()[k], b = text.data()[t * D + k];
      dot += a * b, ni += a * a, nt += b * b;
    }
    std::cout << "cosine to '" << texts[t] << "': " << dot / std::sqrt(ni * nt) << "\n";
  }

  // 2. FocusPatch: a few normal shots, then detection (the category is routed, not given).
  Detector<> detector(model);
  detector.set_prompt_bank(load_prompt_bank("weights/prompts/unified_keywords.txt"), /*stored_first=*/true);
  std::vector<Image> shots;
  std::vector<std::string> names;
  for (int i = 2; i < argc && std::string(argv[i]) != "--"; ++i) shots.push_back(load_image(argv[i])), names.push_back(argv[i]);
  detector.add_normal("washer", shots, names);
  // With 2 or more shots and no other normal images, each shot is scored against the others to set
  // the thresholds (detector.calibrate(...) takes held-out normal images instead); with 1 shot the
  // verdict stays "uncalibrated".
  if (shots.size() >= 2) detector.calibrate_leave_one_shot_out("washer");
  const Detection d = detector.detect(std::span<const Image>(&test, 1)).front();
  std::cout << "category " << d.route.category << ", anomaly score " << d.image_score << ", verdict " << verdict_name(d.verdict)
            << ", " << d.regions.size() << " defect region(s), map " << d.map.width << "x" << d.map.height << ", top keyword '"
            << (d.top_keywords.empty() ? "" : d.top_keywords.front().name) << "'\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << e.what() << "\n";
  return 1;
}
