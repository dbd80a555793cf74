// The detector assembled: routing, visual memory, keyword focus and fusion on a small random CLIP.
// Keywords are set by hand here so these tests need no tokenizer; the stages themselves are
// checked against references in test_maps, test_memory and test_focus.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <thread>
#include <unistd.h>

#include "focuspatch/anomaly/detector.hpp"
#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/convert/random_clip.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "test_paths.hpp"
#include "tiny_detector_fixture.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

using test::hand_keywords;
using test::tiny_weights;

Image sample(const char* category, const char* defect, int index, bool clean = false) {
  const auto s = render_synthetic_sample(category, defect == std::string("good") && index < 100 ? SyntheticSplit::train : SyntheticSplit::test,
                                         defect, index % 100, 64, 3);
  return clean ? s.clean : s.image;
}

Detector<> make_detector(ClipModel<>& model, DetectorOptions options = {}) {
  Detector<> d(model, std::move(options));
  for (const char* c : {"washer", "weave"}) {
    d.set_keywords(c, hand_keywords(model.config().embed_dim));
    const std::vector<Image> shots = {sample(c, "good", 0), sample(c, "good", 1)};
    const std::vector<std::string> names = {std::string(c) + "0", std::string(c) + "1"};
    d.add_normal(c, shots, names);
  }
  return d;
}

}  // namespace

TEST_CASE("a normal shot is routed to its category and has no visual anomaly anywhere") {
  ClipModel<> model(tiny_weights());
  Detector<> d = make_detector(model);
  CHECK(d.memory().categories() == std::vector<std::string>{"washer", "weave"});
  for (const char* c : {"washer", "weave"}) {
    const Image shot = sample(c, "good", 1);
    const Detection det = d.detect(std::span<const Image>(&shot, 1)).front();
    CHECK(det.route.category == c);
    CHECK(det.route.similarity == doctest::Approx(1.0).epsilon(1e-5));
    CHECK(det.route.margin > 0.0f);
    for (float v : det.visual_map.values) CHECK(v == doctest::Approx(0.0).scale(1.0).epsilon(1e-5));
    CHECK(det.map.height == 32);
    CHECK(det.map.width == 32);
  }
}

TEST_CASE("the visual map peaks where the defect changed the pixels") {
  ClipModel<> model(tiny_weights());
  DetectorOptions options;
  options.feature_layers = {0};  // the first block: least mixing between patches
  Detector<> d(model, options);
  d.set_keywords("washer", hand_keywords(model.config().embed_dim));
  const auto s = render_synthetic_sample("washer", SyntheticSplit::test, "hole", 0, 32, 5);
  // The same image without its defect is the only normal shot, so any distance is the defect's.
  const std::vector<Image> shots = {s.clean};
  const std::vector<std::string> names = {"clean"};
  d.add_normal("washer", shots, names);
  const Detection det = d.detect(std::span<const Image>(&s.image, 1)).front();
  const auto peak = std::max_element(det.visual_map.values.begin(), det.visual_map.values.end()) - det.visual_map.values.begin();
  const int py = static_cast<int>(peak / 4), px = static_cast<int>(peak % 4);
  bool overlaps = false;  // does the 8 x 8 patch at the peak hold any defect pixel?
  for (int y = py * 8; y < py * 8 + 8; ++y)
    for (int x = px * 8; x < px * 8 + 8; ++x) overlaps |= s.mask[static_cast<std::size_t>(y * 32 + x)] != 0;
  CHECK(overlaps);
  CHECK(det.visual_map.values[static_cast<std::size_t>(peak)] > 1e-4f);
}

TEST_CASE("fusion and the image score follow the documented formulas") {
  ClipModel<> model(tiny_weights());
  DetectorOptions options;
  options.suppress_background = false;
  options.text_weight = 0.25;
  options.text_score_weight = 0.4;
  options.sigma = 1.5;
  options.image_top_fraction = 0.05;
  Detector<> d = make_detector(model, options);
  const Image img = sample("weave", "scratch", 0);
  const Detection det = d.detect(std::span<const Image>(&img, 1)).front();
  AnomalyMap fused(4, 4);
  for (std::size_t i = 0; i < 16; ++i) fused.values[i] = 0.25f * det.text_map.values[i] + 0.75f * 0.5f * det.visual_map.values[i];
  const AnomalyMap expected = upsample_and_smooth(fused, 32, 32, 1.5);
  REQUIRE(det.map.values.size() == expected.values.size());
  for (std::size_t i = 0; i < expected.values.size(); ++i) CHECK(det.map.values[i] == doctest::Approx(expected.values[i]).epsilon(1e-6));
  // 5% of 1024 pixels: the mean of the 52 largest.
  std::vector<float> sorted = det.map.values;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  double top = 0;
  for (int i = 0; i < 52; ++i) top += sorted[static_cast<std::size_t>(i)];
  top /= 52;
  CHECK(det.image_score == doctest::Approx(0.4 * det.text_score + 0.6 * top).epsilon(1e-5));
  // The text map is a probability per patch; the focused score is one of the keyword scores.
  for (float v : det.text_map.values) CHECK((v >= 0.0f && v <= 1.0f));
  REQUIRE(!det.top_keywords.empty());
  CHECK(det.text_score == doctest::Approx(det.top_keywords.front().score));
}

TEST_CASE("batches, single images and a reloaded memory bank give the same detections") {
  ClipModel<> model(tiny_weights());
  Detector<> d = make_detector(model);
  const std::vector<Image> images = {sample("washer", "stain", 0), sample("weave", "hole", 1), sample("washer", "good", 102)};
  const auto together = d.detect(images);
  const fs::path bank = test::scratch_path("bank.fpw");
  d.memory().save(bank);
  Detector<> reloaded(model);
  for (const char* c : {"washer", "weave"}) reloaded.set_keywords(c, hand_keywords(model.config().embed_dim));
  reloaded.set_memory(MemoryBank::load(bank, Detector<>::weights_id(model)));
  for (std::size_t i = 0; i < images.size(); ++i) {
    CAPTURE(i);
    const Detection alone = d.detect(std::span<const Image>(&images[i], 1)).front();
    const Detection again = reloaded.detect(std::span<const Image>(&images[i], 1)).front();
    for (const Detection* other : {&alone, &again}) {
      CHECK(other->route.category == together[i].route.category);
      CHECK(other->image_score == doctest::Approx(together[i].image_score).epsilon(1e-5));
      for (std::size_t k = 0; k < other->map.values.size(); k += 37)
        CHECK(other->map.values[k] == doctest::Approx(together[i].map.values[k]).epsilon(1e-4));
    }
  }
  // A bank built with other weights lives in another feature space.
  ClipModel<> other(tiny_weights(8));
  Detector<> stranger(other);
  CHECK(Detector<>::weights_id(other) != Detector<>::weights_id(model));
  CHECK_THROWS_WITH_AS(stranger.set_memory(MemoryBank::load(bank, Detector<>::weights_id(other))), doctest::Contains("Rebuild"), Error);
  fs::remove(bank);
}

TEST_CASE("the detector explains what it is missing") {
  ClipModel<> model(tiny_weights());
  Detector<> d(model);
  const Image img = sample("washer", "good", 0);
  CHECK_THROWS_WITH_AS(d.detect(std::span<const Image>(&img, 1)), doctest::Contains("memory bank is empty"), Error);
  const std::vector<Image> shots = {img};
  const std::vector<std::string> names = {"shot"};
  d.add_normal("washer", shots, names);
  CHECK_THROWS_WITH_AS(d.detect(std::span<const Image>(&img, 1)), doctest::Contains("no prompt bank"), Error);
  DetectorOptions bad;
  bad.feature_layers = {5};
  CHECK_THROWS_WITH_AS(Detector<>(model, bad), doctest::Contains("feature block 5 does not exist"), Error);
  KeywordEmbeddings wrong = hand_keywords(8);
  CHECK_THROWS_WITH_AS(d.set_keywords("washer", wrong), doctest::Contains("width 8"), Error);
}

TEST_CASE("learned prompt contexts stored in the weights join the keywords as extra rows") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  const ClipTokenizer tok = ClipTokenizer::from_openai_file(test::shared_vocab_path().string());
  ConvertOptions opt;
  opt.vocab = tok.vocab();
  opt.merges = tok.merges();
  PreparedPromptData data;
  ImportedLearnedPrompts learned;
  learned.prompts.source = "hand-made";
  for (const auto& [name, kind] : {std::pair{"normal", KeywordKind::Normal}, std::pair{"anomaly", KeywordKind::Anomaly}}) {
    LearnedState s;
    s.name = name;
    s.kind = kind;
    s.context = FloatTensor({2, 3, 64});
    for (std::int64_t i = 0; i < s.context.numel(); ++i) s.context.data()[i] = 0.02f * static_cast<float>((i * 7 + (kind == KeywordKind::Normal ? 1 : 5)) % 11) - 0.1f;
    learned.prompts.states.push_back(std::move(s));
  }
  data.learned = learned;
  const fs::path path = test::scratch_path("learned.fpw");
  write_clip_weights_with_prompts(random_clip_plan(clip_preset("tiny"), 11), opt, path.string(), data);
  ClipModel<> model(path.string());
  Detector<> d(model);
  d.set_prompt_bank(parse_prompt_bank("[object]\nobject\n[templates]\na photo of a {state} {object}.\n[normal]\nflawless\n[anomaly]\nscratched\n", "tiny bank"));
  const KeywordEmbeddings& kw = d.keywords("metal_nut");
  REQUIRE(kw.names.size() == 4);
  CHECK(kw.names[2] == "learned normal");
  CHECK(kw.names[3] == "learned anomaly");
  CHECK(kw.kinds[3] == KeywordKind::Anomaly);
  // The learned rows are what learned_state_embeddings gives for the category's object word.
  const KeywordEmbeddings direct = learned_state_embeddings(model, load_learned_prompts(model.weights()), "metal nut");
  for (std::int64_t i = 0; i < direct.matrix.numel(); ++i) CHECK(kw.matrix.data()[2 * 32 + i] == doctest::Approx(direct.matrix.data()[i]));
  fs::remove(path);
}

TEST_CASE("a prepared detector gives the same detections from several threads at once") {
  ClipModel<> model(tiny_weights());
  Detector<> d = make_detector(model);
  d.prepare();
  std::vector<Image> images;
  for (int i = 0; i < 6; ++i) images.push_back(sample(i % 2 ? "weave" : "washer", i % 3 ? "scratch" : "good", i + (i % 3 ? 0 : 100)));
  Detector<>::Workspace ws;
  const Detector<>& shared = d;
  std::vector<Detection> single;
  for (const auto& img : images) single.push_back(shared.detect(std::span<const Image>(&img, 1), ws).front());
  std::vector<std::vector<Detection>> per_thread(4);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < per_thread.size(); ++t)
    threads.emplace_back([&, t] {
      Detector<>::Workspace own;
      for (int round = 0; round < 2; ++round)
        for (const auto& img : images) {
          auto r = shared.detect(std::span<const Image>(&img, 1), own).front();
          if (round == 1) per_thread[t].push_back(std::move(r));
        }
    });
  for (auto& th : threads) th.join();
  for (const auto& results : per_thread) {
    REQUIRE(results.size() == single.size());
    for (std::size_t i = 0; i < single.size(); ++i) {
      CHECK(results[i].route.category == single[i].route.category);
      CHECK(results[i].image_score == single[i].image_score);
      CHECK(results[i].map.values == single[i].map.values);
    }
  }
}
