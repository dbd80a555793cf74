// Faults that must come out as errors naming their cause, never as numbers: NaN and infinity in
// weights, inputs and features, damaged weight files, huge images, over-long prompts. And running
// a whole evaluation again and again in one process leaves nothing behind (the sanitized build,
// scripts/test-sanitized.sh, runs this under LeakSanitizer as well). The second round: special
// files as inputs, failed writes (an unwritable folder, a file-size limit, a really full tmpfs
// where mounting one is permitted), unchecked metadata, converter checks, dataset entries that
// cannot be typed, and masks in every dataset's convention.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cli_support.hpp"
#include "focuspatch/anomaly/detector.hpp"
#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/convert/random_clip.hpp"
#include "focuspatch/eval/evaluation.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "focuspatch/io/checkpoint.hpp"
#include "focuspatch/io/directory_listing.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/io/npy.hpp"
#include "focuspatch/io/output_file.hpp"
#include "focuspatch/io/zip_archive.hpp"
#include "focuspatch/text/tokenizer.hpp"
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

// ---- hostile inputs, second round (issue 12) --------------------------------------------------

namespace {

// Every file in `dir`, recursively, as paths relative to it: what a failed write must not add to.
std::vector<std::string> files_under(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (!e.is_directory()) out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

// Writes beyond `bytes` fail with EFBIG while this lives: RLIMIT_FSIZE with SIGXFSZ ignored, which
// is how a process sees a full disk in the middle of a file, without privileges. Children started
// meanwhile inherit both.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    previous_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, previous_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit saved_{};
  void (*previous_)(int) = SIG_DFL;
};

// A 64 KiB tmpfs filled to the last page: a really full disk. Mounting needs privileges (root, or
// CAP_SYS_ADMIN); where it is not permitted, ok() is false and the tests that need it say so.
class FullDisk {
 public:
  explicit FullDisk(const fs::path& dir) : dir_(dir) {
    fs::create_directories(dir_);
    mounted_ = ::mount("tmpfs", dir_.c_str(), "tmpfs", 0, "size=64k") == 0;
    if (!mounted_) {
      why_ = std::strerror(errno);
      return;
    }
    fs::create_directories(dir_ / "out");  // before filling: even a folder may need space
    const int fd = ::open((dir_ / "filler").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const std::string block(4096, 'x');
    while (fd >= 0 && ::write(fd, block.data(), block.size()) > 0) {
    }
    while (fd >= 0 && ::write(fd, block.data(), 1) > 0) {
    }
    if (fd >= 0) ::close(fd);
  }
  ~FullDisk() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  FullDisk(const FullDisk&) = delete;
  FullDisk& operator=(const FullDisk&) = delete;
  bool ok() const { return mounted_; }
  const std::string& why() const { return why_; }
  fs::path out() const { return dir_ / "out"; }

 private:
  fs::path dir_;
  bool mounted_ = false;
  std::string why_;
};

// Runs `f`, failing the test (instead of hanging it) if it takes more than 30 s: what a blocking
// open of a FIFO would do.
template <class F>
std::string error_within_deadline(F&& f) {
  ::alarm(30);
  std::string msg = error_of(std::forward<F>(f));
  ::alarm(0);
  return msg;
}

// A copy of the tiny weights' plan with one configuration number changed.
std::string weights_with(const std::string& out_name, const std::function<void(ClipConfig&)>& change) {
  ConversionPlan plan = random_clip_plan(clip_preset("tiny"), 11);
  change(plan.config);
  const std::string p = (scratch() / out_name).string();
  write_clip_weights(plan, ConvertOptions{}, p);
  return p;
}

}  // namespace

TEST_CASE("output files: whole or not at all, every failure an error naming the file") {
  const fs::path dir = scratch() / "outputs";
  fs::remove_all(dir);  // each subcase runs the test case from the top
  fs::create_directories(dir);
  const fs::path target = dir / "results.json";

  write_file(target, "first\n");
  CHECK(test::read_all(target) == "first\n");
  write_file(target, "second\n");  // replaces the old file
  CHECK(test::read_all(target) == "second\n");
  CHECK(files_under(dir) == std::vector<std::string>{"results.json"});

  SUBCASE("a missing folder, a folder in the way, a FIFO in the way") {
    const fs::path missing = dir / "no_such_dir" / "x.json";
    std::string msg = error_of([&] { write_file(missing, "x"); });
    CHECK(contains(msg, missing.string() + ": cannot create the file (No such file or directory"));
    fs::create_directories(dir / "taken.json");
    CHECK(contains(error_of([&] { write_file(dir / "taken.json", "x"); }), "taken.json: is a directory"));
    const fs::path fifo = dir / "pipe.json";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    msg = error_within_deadline([&] { write_file(fifo, "x"); });
    CHECK(contains(msg, "pipe.json: exists and is not a regular file"));
    CHECK(fs::is_fifo(fifo));  // not replaced
    fs::remove(fifo);
    fs::remove(dir / "taken.json");
  }

  SUBCASE("a write failing halfway keeps the old file and leaves nothing else") {
    const std::string big(256 * 1024, 'y');
    std::string msg;
    {
      const FileSizeLimit limit(64 * 1024);
      msg = error_of([&] { write_file(target, big); });
    }
    CHECK(contains(msg, target.string() + ": write failed (File too large)"));
    CHECK(test::read_all(target) == "second\n");
    CHECK(files_under(dir) == std::vector<std::string>{"results.json"});

    // The same for each writer that goes through OutputFile.
    Image img;
    img.width = img.height = 256;
    img.rgb.resize(256 * 256 * 3);
    std::mt19937 noise(7);  // incompressible: the PNG stays far above the limit
    for (auto& v : img.rgb) v = static_cast<std::uint8_t>(noise() >> 24);
    std::vector<float> values(256 * 256, 0.5f);
    WeightWriter bank;
    bank.add_tensor("memory.features", DType::F32, FloatTensor({256, 256}));
    {
      const FileSizeLimit limit(16 * 1024);
      CHECK(contains(error_of([&] { write_png((dir / "overlay.png").string(), img); }), "overlay.png: write failed (File too large)"));
      const std::vector<std::uint8_t> grey(img.rgb.begin(), img.rgb.begin() + 256 * 256);
      CHECK(contains(error_of([&] { write_grey_png((dir / "mask.png").string(), 256, 256, grey); }), "mask.png: write failed"));
      CHECK(contains(error_of([&] { write_npy((dir / "map.npy").string(), {256, 256}, values); }), "map.npy: write failed"));
      CHECK(contains(error_of([&] { bank.write(dir / "bank.fpw"); }), "bank.fpw: write failed"));
    }
    CHECK(files_under(dir) == std::vector<std::string>{"results.json"});
  }

  SUBCASE("a full disk: the library's writers and focuspatch-detect fail naming the file") {
    const FullDisk disk(scratch() / "full");
    if (!disk.ok()) {
      MESSAGE("skipped: cannot mount a small tmpfs to fill (", disk.why(), "); needs root or CAP_SYS_ADMIN");
      return;
    }
    const fs::path out = disk.out();
    std::string msg = error_of([&] { write_file(out / "results.md", std::string(8192, 'm')); });
    CHECK(contains(msg, (out / "results.md").string() + ": write failed (No space left on device; is the disk full?)"));
    const std::vector<float> values(64 * 64, 0.25f);
    CHECK(contains(error_of([&] { write_npy((out / "map.npy").string(), {64, 64}, values); }), "No space left on device"));
    CHECK(contains(error_of([&] { write_png((out / "o.png").string(), synthetic("washer", SyntheticSplit::test, "scratch", 0)); }),
                   "o.png: write failed (No space left on device"));
    CHECK(files_under(out).empty());

    if (!test::have_shared_vocab()) {
      MESSAGE("skipped focuspatch-detect on a full disk: ", test::shared_vocab_path().string(), " is absent");
      return;
    }
    const std::string weights = (scratch() / "tiny_vocab_full.fpw").string();
    REQUIRE(test::run_tool("focuspatch-convert", "--random tiny --seed 5 --vocab " + test::shared_vocab_path().string() + " -o " + weights,
                           scratch() / "convert_full.log")
                .status == 0);
    const fs::path shot = scratch() / "shot.png", probe = scratch() / "probe.png";
    write_png(shot.string(), synthetic("washer", SyntheticSplit::train, "good", 0));
    write_png(probe.string(), synthetic("washer", SyntheticSplit::test, "scratch", 0));
    const auto r = test::run_tool("focuspatch-detect", "--weights " + weights + " --normal washer=" + shot.string() + " --image " +
                                                           probe.string() + " --out " + out.string(),
                                  scratch() / "detect_full.log");
    INFO(r.output);
    CHECK(r.status != 0);
    CHECK(contains(r.output, out.string()));
    CHECK(contains(r.output, "No space left on device"));
    CHECK_FALSE(contains(r.output, "wrote "));
    CHECK(files_under(out).empty());

    // focuspatch-eval never checked its results.md; without overlays it is the first file written.
    const fs::path data = scratch() / "full_data";
    fs::remove_all(data);
    SyntheticDatasetOptions o;
    o.image_size = 32;
    o.train_good = 1;
    o.test_good = 1;
    o.test_per_defect = 1;
    o.categories = {"washer"};
    write_synthetic_dataset(data, o);
    const auto e = test::run_tool("focuspatch-eval", "--weights " + weights + " --data " + data.string() +
                                                         " --shots 1 --overlays 0 --quiet --out " + out.string(),
                                  scratch() / "eval_full.log");
    INFO(e.output);
    CHECK(e.status == 1);
    CHECK(contains(e.output, (out / "results.md").string() + ": write failed (No space left on device"));
    CHECK(files_under(out).empty());
  }
}

TEST_CASE("FIFOs, devices and folders given as inputs are refused at once, naming them") {
  const fs::path dir = scratch() / "special";
  fs::create_directories(dir);
  const fs::path fifo = dir / "input.fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  const std::string f = fifo.string();
  const std::string is_fifo = f + ": is a FIFO (named pipe), expected a regular file";
  CHECK(contains(error_within_deadline([&] { ClipModel<> model(f); }), is_fifo));
  CHECK(contains(error_within_deadline([&] { MemoryBank::load(f, "x"); }), is_fifo));
  CHECK(contains(error_within_deadline([&] { open_checkpoint(f); }), is_fifo));
  CHECK(contains(error_within_deadline([&] { ClipTokenizer::from_openai_file(f); }), is_fifo));
  CHECK(contains(error_within_deadline([&] { load_image(f); }), is_fifo));
  CHECK(contains(error_within_deadline([&] { load_prompt_bank(f); }), is_fifo));
  ConvertRequest req;
  req.input = f;
  req.output = (dir / "never.fpw").string();
  req.no_tokenizer = true;
  CHECK(contains(error_within_deadline([&] { convert_clip_checkpoint(req); }), is_fifo));
  CHECK_FALSE(fs::exists(req.output));

  // /dev/zero never ends; it used to be read until memory ran out, the bad_alloc naming nothing.
  CHECK(contains(error_within_deadline([&] { load_prompt_bank("/dev/zero"); }), "/dev/zero: is a character device"));
  CHECK(contains(error_within_deadline([&] { ClipModel<> model("/dev/zero"); }), "/dev/zero: is a character device"));
  CHECK(contains(error_of([&] { load_prompt_bank(dir); }), dir.string() + ": is a directory"));
  CHECK(contains(error_of([&] { MemoryBank::load(dir, "x"); }), dir.string() + ": is a directory"));

  // A streamed read is bounded, naming the file: a (sparse) 17 MiB "prompt bank".
  const fs::path huge = dir / "huge_bank.txt";
  { std::ofstream(huge) << "[object]\n"; }
  fs::resize_file(huge, std::uintmax_t{17} << 20);
  CHECK(contains(error_of([&] { load_prompt_bank(huge); }),
                 huge.string() + ": prompt bank of 17825792 bytes is larger than the limit of 16777216 bytes"));

  // And the programs exit with that message instead of hanging.
  const auto r = test::run_tool("focuspatch-embed", "--weights " + f + " --text hi", scratch() / "embed_fifo.log");
  CHECK(r.status == 1);
  CHECK(contains(r.output, is_fifo));
}

TEST_CASE("configuration numbers of a weight file are validated at load, naming the file and the field") {
  struct Case {
    const char* file;
    std::function<void(ClipConfig&)> change;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"nan_scale.fpw", [](ClipConfig& c) { c.logit_scale = kNaN; }, "'clip.logit_scale' is nan"},
      {"inf_scale.fpw", [](ClipConfig& c) { c.logit_scale = kInf; }, "'clip.logit_scale' is inf"},
      {"huge_scale.fpw", [](ClipConfig& c) { c.logit_scale = 1000.0f; }, "'clip.logit_scale' is 1000"},
      {"nan_mean.fpw", [](ClipConfig& c) { c.image_mean[1] = kNaN; }, "'clip.image_mean' of channel G is nan"},
      {"inf_std.fpw", [](ClipConfig& c) { c.image_std[2] = kInf; }, "'clip.image_std' of channel B is inf"},
      {"zero_std.fpw", [](ClipConfig& c) { c.image_std[0] = 0.0f; }, "'clip.image_std' of channel R is 0"},
      {"negative_std.fpw", [](ClipConfig& c) { c.image_std[0] = -0.25f; }, "'clip.image_std' of channel R is -0.25"},
      {"nan_eps.fpw", [](ClipConfig& c) { c.layer_norm_eps = kNaN; }, "'clip.layer_norm_eps' is nan"},
  };
  for (const Case& c : cases) {
    const std::string path = weights_with(c.file, c.change);
    const std::string msg = error_of([&] { ClipModel<> model(path); });
    CAPTURE(msg);
    CHECK(contains(msg, path + ": " + c.message));
  }
  // embed printed null probabilities and exited 0 on a NaN logit scale; now it exits naming the field.
  const auto r = test::run_tool("focuspatch-embed", "--weights " + (scratch() / "nan_scale.fpw").string() + " --text hi",
                                scratch() / "embed_nan.log");
  CHECK(r.status == 1);
  CHECK(contains(r.output, "'clip.logit_scale' is nan"));

  // The detector's preprocessing and embed's refuse the same values through the same check.
  const Image img = synthetic("washer", SyntheticSplit::test, "good", 0);
  ClipPreprocess pp;
  pp.resolution = 16;
  pp.std[1] = 0.0f;
  CHECK(contains(error_of([&] { preprocess_clip(img, pp); }), "image std of channel G is 0"));
  std::vector<float> out(static_cast<std::size_t>(3 * img.width * img.height));
  std::array<float, 3> mean = pp.mean;
  mean[0] = kNaN;
  CHECK(contains(error_of([&] { normalize_to_chw(img, mean, ClipPreprocess{}.std, out.data()); }), "image mean of channel R is nan"));
}

TEST_CASE("the converter checks zip entry CRCs and refuses a config.json that contradicts the tensors") {
  SUBCASE("a storage whose CRC-32 does not match its data") {
    const fs::path source = test::fixtures_dir() / "clip" / "p8_r32" / "openai_state_dict.pt";
    std::string bytes = test::read_all(source);
    std::string victim;
    {
      const ZipArchive zip(std::as_bytes(std::span(bytes.data(), bytes.size())), source.string());
      for (const ZipEntry& e : zip.entries())
        if (e.name.find("/data/") != std::string::npos && e.method == 0 && e.uncompressed_size > 64) {
          const auto raw = zip.raw_data(e);
          bytes[static_cast<std::size_t>(reinterpret_cast<const char*>(raw.data()) - bytes.data()) + 17] ^= 0x40;
          victim = e.name;
          break;
        }
    }
    REQUIRE_FALSE(victim.empty());
    const fs::path damaged = scratch() / "damaged_crc.pt";
    test::write_all(damaged, bytes);
    ConvertRequest req;
    req.input = damaged.string();
    req.output = (scratch() / "from_damaged.fpw").string();
    req.no_tokenizer = true;
    const std::string msg = error_of([&] { convert_clip_checkpoint(req); });
    CHECK(contains(msg, damaged.string() + ": entry '" + victim + "' fails its CRC-32 check"));
    CHECK_FALSE(fs::exists(req.output));
  }

  SUBCASE("config.json sizes against the tensors") {
    const fs::path source = test::fixtures_dir() / "clip" / "p14_r42_hf" / "hf";
    const std::string config = test::read_all(source / "config.json");
    struct Case {
      const char* from;
      const char* to;
      const char* message;
    };
    const std::vector<Case> cases = {
        {"\"num_hidden_layers\": 1,", "\"num_hidden_layers\": 1000000000,",
         "config.json says vision_config.num_hidden_layers = 1000000000 but the weights hold vision blocks: 1"},
        {"\"hidden_size\": 32,", "\"hidden_size\": 0,", "'text_config.hidden_size' = 0 is not a positive integer"},
        {"\"intermediate_size\": 384,", "\"intermediate_size\": -384,", "'vision_config.intermediate_size' = -384 is not a positive integer"},
        {"\"hidden_size\": 96,", "\"hidden_size\": 64,", "config.json says vision_config.hidden_size = 64 but the patch embedding's width is 96"},
        {"\"vocab_size\": 400", "\"vocab_size\": 49408", "config.json says text_config.vocab_size = 49408 but the token embedding's rows are 400"},
        {"\"max_position_embeddings\": 77,", "\"max_position_embeddings\": 78,", "text_config.max_position_embeddings = 78 but the position embedding's rows are 77"},
        {"\"projection_dim\": 48,\n  \"text_config\"", "\"projection_dim\": 47,\n  \"text_config\"", "config.json says projection_dim = 47 but the projection's width is 48"},
    };
    for (const Case& c : cases) {
      CAPTURE(c.to);
      const fs::path copy = scratch() / "hf_contradiction";
      fs::remove_all(copy);
      fs::create_directories(copy);
      fs::copy_file(source / "model.safetensors", copy / "model.safetensors");
      std::string edited = config;
      const auto at = edited.find(c.from);
      REQUIRE(at != std::string::npos);
      edited.replace(at, std::strlen(c.from), c.to);
      test::write_all(copy / "config.json", edited);
      ConvertRequest req;
      req.input = copy.string();
      req.output = (scratch() / "from_contradiction.fpw").string();
      req.no_tokenizer = true;
      const std::string msg = error_of([&] { convert_clip_checkpoint(req); });
      CHECK(contains(msg, c.message));
      CHECK_FALSE(fs::exists(req.output));
    }
  }
}

TEST_CASE("a dataset entry whose type cannot be read is refused, naming it, not skipped") {
  const fs::path root = scratch() / "listing";
  fs::remove_all(root);
  SyntheticDatasetOptions o;
  o.image_size = 32;
  o.train_good = 2;
  o.test_good = 1;
  o.test_per_defect = 1;
  o.categories = {"washer"};
  write_synthetic_dataset(root, o);
  REQUIRE_NOTHROW(eval::load_dataset(root.string(), "mvtec", {}));
  const fs::path folder = root / "washer" / "test" / "good";

  const fs::path loop = folder / "001.png";
  fs::create_symlink("001.png", loop);  // points at itself
  std::string msg = error_of([&] { eval::load_dataset(root.string(), "mvtec", {}); });
  CHECK(contains(msg, loop.string() + ": cannot tell what this entry is ("));
  CHECK(contains(msg, "a broken or looping symbolic link?"));
  // The same listing serves the programs' --image and --normal folders.
  CHECK(contains(error_of([&] { list_directory(folder, true); }), loop.string() + ": cannot tell what this entry is"));
  if (test::have_shared_vocab()) {
    const std::string weights = (scratch() / "tiny_vocab_listing.fpw").string();
    REQUIRE(test::run_tool("focuspatch-convert", "--random tiny --seed 5 --vocab " + test::shared_vocab_path().string() + " -o " + weights,
                           scratch() / "convert_listing.log")
                .status == 0);
    const auto r = test::run_tool("focuspatch-detect", "--weights " + weights + " --normal washer=" + (root / "washer/train/good").string() +
                                                           " --image " + folder.string() + " --out " + (scratch() / "listing_out").string(),
                                  scratch() / "detect_listing.log");
    CHECK(r.status == 1);
    CHECK(contains(r.output, loop.string() + ": cannot tell what this entry is"));
  } else {
    MESSAGE("skipped focuspatch-detect on a looping link: ", test::shared_vocab_path().string(), " is absent");
  }
  fs::remove(loop);
  // Hidden entries (an output's temporary, say) are left out, the rest sorted.
  { std::ofstream(folder / ".000.png.1-0.partial") << "x"; }
  const std::vector<DirectoryEntry> listed = list_directory(folder, false);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].path == folder / "000.png");
  CHECK_FALSE(listed[0].is_directory);
  CHECK(list_directory(folder, true).size() == 2);
  fs::remove(folder / ".000.png.1-0.partial");

  const fs::path dangling = folder / "002.png";
  fs::create_symlink("/nonexistent/002.png", dangling);
  CHECK(contains(error_of([&] { eval::load_dataset(root.string(), "mvtec", {}); }), dangling.string() + ": cannot tell what this entry is"));
  fs::remove(dangling);

  const fs::path fifo = folder / "003.png";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK(contains(error_within_deadline([&] { eval::load_dataset(root.string(), "mvtec", {}); }),
                 fifo.string() + ": is neither a file nor a folder"));
  fs::remove(fifo);
  CHECK_NOTHROW(eval::load_dataset(root.string(), "mvtec", {}));
}

TEST_CASE("masks stored as VisA ships them (0/1 labels) give the same pixel metrics as 0/255 masks") {
  // A VisA tree (split_csv/1cls.csv) of synthetic images, once with 0/255 masks and once with the
  // same masks as 0/1 labels: evaluated alike, every figure must be equal. Before, the 0/1 masks
  // read as all normal and the pixel AUROC was undefined.
  auto build = [&](const fs::path& root, bool labels) {
    fs::remove_all(root);
    const fs::path data = root / "washer" / "Data";
    fs::create_directories(data / "Images" / "Normal");
    fs::create_directories(data / "Images" / "Anomaly");
    fs::create_directories(data / "Masks" / "Anomaly");
    fs::create_directories(root / "split_csv");
    std::string csv = "object,split,label,image,mask\n";
    for (int i = 0; i < 3; ++i) {
      const std::string name = "washer/Data/Images/Normal/00" + std::to_string(i) + ".png";
      write_png((root / name).string(), synthetic("washer", i < 2 ? SyntheticSplit::train : SyntheticSplit::test, "good", i));
      csv += "washer," + std::string(i < 2 ? "train" : "test") + ",normal," + name + ",\n";
    }
    const char* defects[] = {"scratch", "hole"};
    for (int i = 0; i < 2; ++i) {
      const SyntheticSample s = render_synthetic_sample("washer", SyntheticSplit::test, defects[i], i, 64, 3);
      const std::string image = "washer/Data/Images/Anomaly/00" + std::to_string(i) + ".png";
      const std::string mask = "washer/Data/Masks/Anomaly/00" + std::to_string(i) + ".png";
      write_png((root / image).string(), s.image);
      std::vector<std::uint8_t> m = s.mask;
      REQUIRE(std::count(m.begin(), m.end(), 255) > 0);
      if (labels) for (auto& v : m) v = v ? 1 : 0;
      write_grey_png((root / mask).string(), 64, 64, m);
      csv += "washer,test,anomaly," + image + "," + mask + "\n";
    }
    test::write_all(root / "split_csv" / "1cls.csv", csv);
  };
  build(scratch() / "visa_255", false);
  build(scratch() / "visa_01", true);
  eval::EvaluationOptions options;
  options.shots = 1;
  auto run = [&](const fs::path& root) {
    const eval::Dataset data = eval::load_dataset(root.string(), "visa", {});
    ClipModel<> model(tiny_weights());
    Detector<> detector(model);
    detector.set_keywords("washer", unit_keywords(model.config().embed_dim));
    return eval::evaluate(detector, data, options);
  };
  const eval::EvaluationReport reference = run(scratch() / "visa_255");
  const eval::EvaluationReport labels = run(scratch() / "visa_01");
  REQUIRE(std::isfinite(reference.mean.pixel.auroc));
  CHECK(labels.mean.pixel.auroc == reference.mean.pixel.auroc);
  CHECK(labels.mean.aupro == reference.mean.aupro);
  CHECK(labels.mean.image.auroc == reference.mean.image.auroc);
}
