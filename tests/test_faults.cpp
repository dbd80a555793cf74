// Faults that must come out as errors naming their cause, never as numbers: NaN and infinity in
// weights, inputs and features, damaged weight files, huge images, over-long prompts. And running
// a whole evaluation again and again in one process leaves nothing behind (the sanitized build,
// scripts/test-sanitized.sh, runs this under LeakSanitizer as well).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "cli_support.hpp"
#include "focuspatch/anomaly/detector.hpp"
#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/convert/random_clip.hpp"
#include "focuspatch/eval/evaluation.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "focuspatch/io/json.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;
using test::contains;
using test::error_of;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

const test::TempDir& scratch() {
  static const test::TempDir dir("test_faults");
  return dir;
}

// Tiny random CLIP (32 px, patch 8, 2 blocks), written once.
const std::string& tiny_weights() {
  static const std::string path = [] {
    const std::string p = (scratch() / "tiny.fpw").string();
    write_clip_weights(random_clip_plan(clip_preset("tiny"), 11), ConvertOptions{}, p);
    return p;
  }();
  return path;
}

std::uint64_t read_u64(const std::string& bytes, std::size_t at) {
  std::uint64_t v;
  std::memcpy(&v, bytes.data() + at, 8);
  return v;
}

// A copy of the tiny weights with element `index` of tensor `name` set to `value`. With
// fix_checksum the header's data CRC is recomputed (fpw_format.hpp: data offset at byte 32, size
// at 40, CRC at 52), so only the value check can notice; without it, the file is simply damaged.
std::string poisoned_copy(const std::string& name, std::size_t index, float value, bool fix_checksum, const std::string& out_name) {
  std::string bytes = test::read_all(tiny_weights());
  std::size_t at = 0;
  {
    const WeightFile original(tiny_weights());
    const TensorView& t = original.tensor(name);
    REQUIRE(t.dtype == DType::F32);
    REQUIRE(static_cast<std::int64_t>(index) + 4 <= t.numel());
    // The tensor's random values are unique in the file: find them to learn the offset.
    const std::string needle(static_cast<const char*>(t.data), 16);
    at = bytes.find(needle);
    REQUIRE(at != std::string::npos);
    REQUIRE(bytes.find(needle, at + 1) == std::string::npos);
  }
  std::memcpy(bytes.data() + at + 4 * index, &value, 4);
  if (fix_checksum) {
    const auto offset = read_u64(bytes, 32), size = read_u64(bytes, 40);
    const std::uint32_t crc = crc32(std::as_bytes(std::span(bytes.data() + offset, size)));
    std::memcpy(bytes.data() + 52, &crc, 4);
  }
  const std::string path = (scratch() / out_name).string();
  test::write_all(path, bytes);
  return path;
}

Image synthetic(const char* category, SyntheticSplit split, const char* defect, int index) {
  return render_synthetic_sample(category, split, defect, index, 64, 3).image;
}

KeywordEmbeddings unit_keywords(std::int64_t D) {
  KeywordEmbeddings k;
  k.object = "thing";
  k.names = {"flawless", "scratch"};
  k.kinds = {KeywordKind::Normal, KeywordKind::Anomaly};
  k.matrix = FloatTensor({2, D});
  k.matrix.data()[0] = 1.0f;
  k.matrix.data()[D + 1] = 1.0f;
  return k;
}

std::size_t open_descriptors() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

}  // namespace

TEST_CASE("NaN or infinity in a weight file is refused when the model loads, naming the tensor") {
  const std::string name = "v.blk.0.mlp.fc.weight";
  for (const float bad : {kNaN, kInf, -kInf}) {
    CAPTURE(bad);
    const std::string path = poisoned_copy(name, 3, bad, /*fix_checksum=*/true, "poisoned.fpw");
    const std::string msg = error_of([&] { ClipModel<> model(path); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "tensor '" + name + "' holds " + (std::isnan(bad) ? "NaN" : bad > 0 ? "+inf" : "-inf") + " at element 3"));
  }
}

TEST_CASE("a NaN that slips past an unverified load reaches no score") {
  const std::string path = poisoned_copy("v.blk.0.mlp.fc.weight", 0, kNaN, /*fix_checksum=*/true, "unverified.fpw");
  ModelLoadOptions trusting;
  trusting.verify_weights = false;
  ClipModel<> model(path, {}, trusting);
  Detector<> detector(model);
  detector.set_keywords("washer", unit_keywords(model.config().embed_dim));

  // Why the checks exist: one NaN weight turns every output into NaN. The model does not hand
  // such outputs out, so neither a shot nor a test image gets that far.
  const Image shot = synthetic("washer", SyntheticSplit::train, "good", 0);
  const std::string msg = error_of([&] { detector.add_normal("washer", std::span<const Image>(&shot, 1), std::vector<std::string>{"shot0"}); });
  CHECK(contains(msg, "encode_images: the model's"));
  CHECK(contains(msg, "hold NaN"));
  CHECK(detector.memory().empty());
}

TEST_CASE("finite weights that overflow inside the model give an error, not infinities") {
  // The largest float in one projection weight: finite, so the load accepts it, but any input of
  // magnitude above 1 on that column overflows the product (as an fp16 activation above 65504
  // would on a GPU).
  const std::string path = poisoned_copy("v.proj.weight", 0, std::numeric_limits<float>::max(), /*fix_checksum=*/true, "overflow.fpw");
  ClipModel<> model(path);
  const int n = model.config().vision.image_size;
  std::vector<float> pixels(static_cast<std::size_t>(3 * n * n));
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>((i * 37) % 101) / 25.0f - 2.0f;
  VisionRequest request;
  request.patch_tokens = true;
  const std::string msg = error_of([&] { model.encode_images(pixels, 1, request); });
  CHECK(contains(msg, "encode_images: the model's"));
  CHECK(contains(msg, "inf at element"));
  CHECK(contains(msg, "use bf16 precision"));
}

TEST_CASE("features holding NaN or infinity are refused before scoring") {
  ClipModel<> model(tiny_weights());
  Detector<> detector(model);
  detector.set_keywords("washer", unit_keywords(model.config().embed_dim));
  const Image shot = synthetic("washer", SyntheticSplit::train, "good", 0);
  detector.add_normal("washer", std::span<const Image>(&shot, 1), std::vector<std::string>{"shot0"});
  const Image test = synthetic("washer", SyntheticSplit::test, "scratch", 0);
  const ImageFeatures healthy = detector.encode(std::span<const Image>(&test, 1)).at(0);
  CHECK(std::isfinite(detector.detect_features(healthy).image_score));

  ImageFeatures f = healthy;
  f.global[1] = kNaN;
  std::string msg = error_of([&] { detector.detect_features(f); });
  CHECK(contains(msg, "global embedding holds NaN at element 1"));
  CHECK(contains(msg, "refusing to score"));
  f = healthy;
  f.layer_patches.back().data()[5] = kInf;
  CHECK(contains(error_of([&] { detector.detect_features(f); }), "patch features holds +inf at element 5"));
  f = healthy;
  f.text_patches.data()[0] = -kInf;
  CHECK(contains(error_of([&] { detector.detect_features(f); }), "text-aligned patch features holds -inf at element 0"));
}

TEST_CASE("a bit flip in the weights' data is caught when the model loads") {
  const std::string path = poisoned_copy("t.blk.1.attn.out.weight", 5, 0.125f, /*fix_checksum=*/false, "flipped.fpw");
  const std::string msg = error_of([&] { ClipModel<> model(path); });
  CHECK(contains(msg, path));
  CHECK(contains(msg, "data checksum mismatch"));
  // The documented opt-out for a file verified before really skips the pass.
  ModelLoadOptions trusting;
  trusting.verify_weights = false;
  CHECK(error_of([&] { ClipModel<> model(path, {}, trusting); }).empty());
}

TEST_CASE("the weight writer refuses non-finite values and fp16 overflow, leaving no file behind") {
  const fs::path out = scratch() / "refused.fpw";
  {
    WeightWriter w;
    FloatTensor t({4});
    t.data()[2] = kNaN;
    w.add_tensor("layer.weight", DType::F32, t);
    const std::string msg = error_of([&] { w.write(out); });
    CHECK(contains(msg, "tensor 'layer.weight' holds NaN at element 2 of 4"));
  }
  {
    WeightWriter w;
    FloatTensor t({3});
    t.data()[1] = 70000.0f;  // fp16's largest finite value is 65504
    w.add_tensor("big.weight", DType::F16, t);
    const std::string msg = error_of([&] { w.write(out); });
    CHECK(contains(msg, "tensor 'big.weight' element 1 (70000) does not fit in f16"));
    // bf16 has f32's range: the same value is stored.
    WeightWriter ok;
    ok.add_tensor("big.weight", DType::BF16, t);
    CHECK_NOTHROW(ok.write(out));
    CHECK(fs::exists(out));
    fs::remove(out);
  }
  CHECK_FALSE(fs::exists(out));
  CHECK_FALSE(fs::exists(out.string() + ".partial"));
}

TEST_CASE("the converter refuses a checkpoint holding NaN, naming the tensor, and writes nothing") {
  // A Hugging Face folder: safetensors has no checksum, so a NaN in it reads back as a NaN.
  const fs::path source = test::fixtures_dir() / "clip" / "p14_r42_hf" / "hf";
  const fs::path copy = scratch() / "hf_nan";
  fs::create_directories(copy);
  for (const auto& e : fs::directory_iterator(source)) fs::copy_file(e.path(), copy / e.path().filename(), fs::copy_options::overwrite_existing);
  const fs::path weights = copy / "model.safetensors";
  REQUIRE(fs::exists(weights));
  std::string bytes = test::read_all(weights);
  const auto header_len = read_u64(bytes, 0);
  const json::Value header = json::parse(bytes.substr(8, header_len), weights.string());
  const std::string victim = "vision_model.encoder.layers.0.mlp.fc1.weight";
  const auto& entry = header.at(victim);
  REQUIRE(entry.at("dtype").as_string() == "F16");
  const auto begin = static_cast<std::size_t>(entry.at("data_offsets")[0].as_int64());
  const std::uint16_t half_nan = 0x7e00;
  std::memcpy(bytes.data() + 8 + header_len + begin + 2 * 7, &half_nan, 2);
  test::write_all(weights, bytes);

  ConvertRequest req;
  req.input = copy.string();
  req.output = (scratch() / "from_nan.fpw").string();
  req.no_tokenizer = true;
  const std::string msg = error_of([&] { convert_clip_checkpoint(req); });
  CHECK(contains(msg, "tensor 'v.blk.0.mlp.fc.weight' holds NaN at element 7"));
  CHECK_FALSE(fs::exists(req.output));
  CHECK_FALSE(fs::exists(req.output + ".partial"));
}

TEST_CASE("non-finite inputs are refused at the model's entry points") {
  ClipModel<> model(tiny_weights());
  const int n = model.config().vision.image_size;
  std::vector<float> pixels(static_cast<std::size_t>(3 * n * n), 0.25f);
  pixels[17] = kNaN;
  CHECK(contains(error_of([&] { model.encode_images(pixels, 1); }), "input pixel 17 of " + std::to_string(pixels.size()) + " is NaN"));
  pixels[17] = -kInf;
  CHECK(contains(error_of([&] { model.encode_images(pixels, 1); }), "is -inf"));

  const auto& t = model.config().text;
  FloatTensor tokens({1, t.context_length, t.width});
  tokens.data()[t.width + 2] = kInf;
  const std::vector<std::int64_t> eot = {3};
  CHECK(contains(error_of([&] { model.encode_token_embeddings(tokens, eot); }), "value " + std::to_string(t.width + 2) + " of"));
}

TEST_CASE("a 20000 x 20000 image is refused before decoding; programs take a higher or lower limit") {
  // A valid PNG whose header is rewritten to claim 20000 x 20000 (stb does not check chunk CRCs).
  std::string png = test::read_all(test::fixtures_dir() / "images" / "rgb_37x53.png");
  const unsigned char size[8] = {0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20};
  std::memcpy(png.data() + 16, size, 8);
  const fs::path huge = scratch() / "huge.png";
  test::write_all(huge, png);
  const std::string msg = error_of([&] { load_image(huge.string()); });
  CHECK(contains(msg, huge.string()));
  CHECK(contains(msg, "20000x20000 = 400000000 pixels, more than the limit of 100000000"));
  CHECK(contains(msg, "--max-image-pixels"));
  // Raised far enough, the limit is stb's own, and the message says so rather than "corrupt".
  ImageLoadOptions generous;
  generous.max_pixels = 400'000'000;
  CHECK(contains(error_of([&] { load_image(huge.string(), generous); }), "larger than stb_image decodes"));

  const fs::path log = scratch() / "embed.log";
  auto run = test::run_tool("focuspatch-embed", "--weights " + tiny_weights() + " --image " + huge.string(), log);
  CHECK(run.status != 0);
  CHECK(contains(run.output, "more than the limit of 100000000"));

  const std::string small = (test::fixtures_dir() / "images" / "rgb_37x53.png").string();
  run = test::run_tool("focuspatch-embed", "--weights " + tiny_weights() + " --image " + small + " --max-image-pixels 1000", log);
  CHECK(run.status != 0);
  CHECK(contains(run.output, "more than the limit of 1000"));
  run = test::run_tool("focuspatch-embed", "--weights " + tiny_weights() + " --image " + small + " --max-image-pixels 1961", log);
  CHECK(run.status == 0);
  run = test::run_tool("focuspatch-embed", "--weights " + tiny_weights() + " --image " + small + " --max-image-pixels 0", log);
  CHECK(run.status != 0);
  CHECK(contains(run.output, "max-image-pixels"));
}

TEST_CASE("a 1 x 1 image is a valid input: it becomes a constant image and is scored") {
  Image dot;
  dot.width = dot.height = 1;
  dot.rgb = {200, 100, 50};
  const fs::path path = scratch() / "dot.png";
  write_png(path.string(), dot);
  const Image back = load_image(path.string());
  REQUIRE(back.width == 1);
  REQUIRE(back.height == 1);
  CHECK(back.rgb == dot.rgb);

  // Resizing a single pixel to any size gives that pixel everywhere: by hand, (v / 255 - mean) / std.
  ClipPreprocess p;
  p.resolution = 32;
  const FloatTensor t = preprocess_clip(back, p);
  REQUIRE(t.numel() == 3 * 32 * 32);
  double worst = 0;
  for (int c = 0; c < 3; ++c) {
    const double expected = (dot.rgb[static_cast<std::size_t>(c)] / 255.0 - p.mean[static_cast<std::size_t>(c)]) / p.std[static_cast<std::size_t>(c)];
    for (int i = 0; i < 32 * 32; ++i) worst = std::max(worst, std::abs(double(t.data()[c * 32 * 32 + i]) - expected));
  }
  CHECK(worst < 1e-5);

  ClipModel<> model(tiny_weights());
  Detector<> detector(model);
  detector.set_keywords("washer", unit_keywords(model.config().embed_dim));
  const Image shot = synthetic("washer", SyntheticSplit::train, "good", 0);
  detector.add_normal("washer", std::span<const Image>(&shot, 1), std::vector<std::string>{"shot0"});
  const Detection d = detector.detect(std::span<const Image>(&back, 1)).at(0);
  CHECK(std::isfinite(d.image_score));
  CHECK(d.map.width == model.config().vision.image_size);
}

TEST_CASE("a prompt longer than the text context is refused, naming the prompt bank") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  const std::string weights = (scratch() / "tiny_vocab.fpw").string();
  const auto converted = test::run_tool("focuspatch-convert",
                                        "--random tiny --seed 5 --vocab " + test::shared_vocab_path().string() + " -o " + weights,
                                        scratch() / "convert.log");
  REQUIRE_MESSAGE(converted.status == 0, converted.output);
  ClipModel<> model(weights);
  REQUIRE(model.config().text.context_length == 77);

  std::string rambling;  // 80 words: more than 77 tokens with the start and end tokens
  for (int i = 0; i < 80; ++i) rambling += " very";
  const PromptBank bank = parse_prompt_bank("[object]\nobject\n[templates]\na photo of a {state} {object}.\n"
                                            "[normal]\nflawless\n[anomaly]\nscratch:" + rambling + " scratched\n",
                                            "long_bank.txt");
  Detector<> detector(model);
  detector.set_prompt_bank(bank);
  const Image shot = synthetic("washer", SyntheticSplit::train, "good", 0);
  detector.add_normal("washer", std::span<const Image>(&shot, 1), std::vector<std::string>{"shot0"});
  const std::string msg = error_of([&] { detector.detect(std::span<const Image>(&shot, 1)); });
  CHECK(contains(msg, "long_bank.txt"));
  CHECK(contains(msg, "tokens but the context length is 77"));

  // The library's encode_texts keeps clip.tokenize(truncate=True)'s behaviour unless told otherwise.
  const std::vector<std::string> texts = {"a photo of a" + rambling + " washer."};
  CHECK_NOTHROW(model.encode_texts(texts));
  CHECK(contains(error_of([&] { model.encode_texts(texts, TextOverflow::Refuse); }), "context length is 77"));
}

TEST_CASE("evaluating a dataset again and again in one process leaves no descriptor open and gives the same result") {
  const fs::path root = scratch() / "data";
  SyntheticDatasetOptions o;
  o.image_size = 64;
  o.train_good = 2;
  o.test_good = 1;
  o.test_per_defect = 1;
  o.categories = {"washer", "weave"};
  write_synthetic_dataset(root, o);
  const eval::Dataset data = eval::load_dataset(root.string(), "mvtec", {});
  eval::EvaluationOptions options;
  options.shots = 1;

  // Everything an application would create per run is created per run here, so a leak in any of
  // it (model, mapping, detector, memory bank, images, metrics) accumulates.
  auto evaluate_once = [&] {
    ClipModel<> model(tiny_weights());
    Detector<> detector(model);
    for (const auto& c : data.categories) detector.set_keywords(c.name, unit_keywords(model.config().embed_dim));
    return eval::evaluate(detector, data, options);
  };
  const eval::EvaluationReport first = evaluate_once();
  const std::size_t descriptors = open_descriptors();
  for (int run = 0; run < 4; ++run) {
    const eval::EvaluationReport again = evaluate_once();
    CHECK(again.mean.image.auroc == first.mean.image.auroc);
    CHECK(again.mean.pixel.auroc == first.mean.pixel.auroc);
    CHECK(again.mean.aupro == first.mean.aupro);
  }
  CHECK(open_descriptors() == descriptors);
}
