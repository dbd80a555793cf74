// The CUDA backend against the CPU backend: every op on random inputs of awkward shapes, then the
// whole CLIP forward and the detector on synthesized images. Inputs that the GPU holds in 16 bits
// are rounded to 16 bits on the host first and given to the CPU backend as fp32, so the two see
// identical operands and the tolerances below only have to cover accumulation order and the
// rounding of 16-bit outputs. Without a GPU every case says why it skipped.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <unistd.h>
#include <vector>

#include "cuda_test_support.hpp"
#include "focuspatch/anomaly/detector.hpp"
#include "focuspatch/backend/cpu.hpp"
#include "focuspatch/backend/cuda.hpp"
#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/convert/random_clip.hpp"
#include "focuspatch/core/half.hpp"
#include "focuspatch/eval/evaluation.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

std::vector<float> random_values(std::size_t n, std::uint64_t seed, float scale = 1.0f, float offset = 0.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = offset + scale * u(rng);
  return v;
}

float round16(float v, CudaPrecision p) {
  return p == CudaPrecision::BF16 ? bf16_to_float(float_to_bf16(v)) : half_to_float(float_to_half(v));
}
std::vector<float> round16(std::vector<float> v, CudaPrecision p) {
  for (auto& x : v) x = round16(x, p);
  return v;
}
// Unit roundoff of the 16-bit format: 2^-11 for fp16, 2^-8 for bf16.
double unit16(CudaPrecision p) { return p == CudaPrecision::BF16 ? 1.0 / 256 : 1.0 / 2048; }
const char* name_of(CudaPrecision p) { return p == CudaPrecision::BF16 ? "bf16" : "fp16"; }

TensorView view_of(const std::vector<float>& v, Shape shape) { return TensorView{DType::F32, std::move(shape), v.data()}; }

// Device round trips for the test's own inputs and outputs.
std::vector<float> read_back(const CudaBackend& be, const CudaBackend::Buffer& b, std::size_t n) {
  std::vector<float> out(n);
  be.read(b.data(), out.data(), n);
  return out;
}
std::vector<float> read_back(const CudaBackend& be, const CudaBackend::OperandBuffer& b, std::size_t n) {
  std::vector<float> out(n);
  be.read(b.data(), out.data(), n);
  return out;
}

double cosine(const float* a, const float* b, std::int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (std::int64_t i = 0; i < n; ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb);
}
// Smallest cosine between corresponding rows of two [rows, width] tensors.
double worst_row_cosine(const FloatTensor& a, const FloatTensor& b) {
  REQUIRE(a.shape() == b.shape());
  const std::int64_t width = a.shape().back(), rows = a.numel() / width;
  double worst = 1.0;
  for (std::int64_t r = 0; r < rows; ++r) worst = std::min(worst, cosine(a.data() + r * width, b.data() + r * width, width));
  return worst;
}

struct LinearCase {
  std::int64_t rows, in, out;
  Epilogue epilogue;
  bool bias, accumulate, f32_out;
};

void check_linear(const CudaBackend& gpu, const LinearCase& c, std::uint64_t seed) {
  const CudaPrecision p = gpu.precision();
  CAPTURE(c.rows);
  CAPTURE(c.in);
  CAPTURE(c.out);
  CAPTURE(static_cast<int>(c.epilogue));
  CAPTURE(c.accumulate);
  CAPTURE(c.f32_out);
  const CpuBackend cpu;
  const auto x = round16(random_values(static_cast<std::size_t>(c.rows * c.in), seed, 1.0f), p);
  const auto w = round16(random_values(static_cast<std::size_t>(c.out * c.in), seed + 1, 0.5f), p);
  const auto b = random_values(static_cast<std::size_t>(c.out), seed + 2, 0.5f);
  const auto y0 = random_values(static_cast<std::size_t>(c.rows * c.out), seed + 3, 2.0f);

  std::vector<float> expected = y0;
  const auto cw = cpu.upload_matrix(view_of(w, {c.out, c.in}));
  const auto cb = cpu.upload(view_of(b, {c.out}));
  cpu.linear(x.data(), c.rows, cw, c.bias ? &cb : nullptr, expected.data(), c.epilogue, c.accumulate);

  const auto gw = gpu.upload_matrix(view_of(w, {c.out, c.in}));
  const auto gb = gpu.upload(view_of(b, {c.out}));
  auto gx = gpu.allocate_operands(x.size());
  gpu.write(gx.data(), x.data(), x.size());
  std::vector<float> got;
  if (c.f32_out) {
    auto gy = gpu.allocate(y0.size());
    gpu.write(gy.data(), y0.data(), y0.size());
    gpu.linear(gx.data(), c.rows, gw, c.bias ? &gb : nullptr, gy.data(), c.epilogue, c.accumulate);
    got = read_back(gpu, gy, y0.size());
  } else {
    auto gy = gpu.allocate_operands(y0.size());
    gpu.linear(gx.data(), c.rows, gw, c.bias ? &gb : nullptr, gy.data(), c.epilogue, false);
    got = read_back(gpu, gy, y0.size());
  }
  // Error bound per element: fp32 accumulation of in products (exact products of 16-bit values)
  // ~ in * 2^-24 * sum|x w|, generously 1e-5 * sum|x w|; a 16-bit output adds the rounding of the
  // product before the bias (16-bit GEMM output) and of the result: 2 units of roundoff.
  int bad = 0;
  for (std::int64_t r = 0; r < c.rows; ++r) {
    for (std::int64_t o = 0; o < c.out; ++o) {
      double magnitude = c.bias ? std::fabs(b[static_cast<std::size_t>(o)]) : 0.0;
      for (std::int64_t k = 0; k < c.in; ++k)
        magnitude += std::fabs(double(x[static_cast<std::size_t>(r * c.in + k)]) * w[static_cast<std::size_t>(o * c.in + k)]);
      const std::size_t i = static_cast<std::size_t>(r * c.out + o);
      const double rounding = c.f32_out ? 0.0 : 2.0 * unit16(p) * (magnitude + std::fabs(expected[i]));
      const double tolerance = 1e-5 * magnitude + rounding + 1e-6;
      if (!(std::fabs(got[i] - expected[i]) <= tolerance) && bad++ < 5) {
        CAPTURE(r);
        CAPTURE(o);
        CHECK(got[i] == doctest::Approx(expected[i]).epsilon(0));
      }
    }
  }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("cuda linear matches the CPU backend for every epilogue, output type and awkward shape") {
  FOCUSPATCH_REQUIRE_GPU();
  for (const CudaPrecision p : {CudaPrecision::F16, CudaPrecision::BF16}) {
    CAPTURE(name_of(p));
    const CudaBackend gpu(CudaOptions{0, p});
    std::uint64_t seed = 100;
    const LinearCase cases[] = {
        {1, 64, 64, Epilogue::None, true, false, true},        {1, 768, 2304, Epilogue::None, true, false, false},
        {197, 768, 2304, Epilogue::None, true, false, false},  {197, 768, 3072, Epilogue::QuickGelu, true, false, false},
        {77, 512, 2048, Epilogue::Gelu, true, false, false},   {197, 3072, 768, Epilogue::None, true, true, true},
        {3, 768, 768, Epilogue::None, false, true, true},      {196, 588, 1024, Epilogue::None, false, false, true},
        {5, 192, 64, Epilogue::None, false, false, true},      {13, 64, 32, Epilogue::QuickGelu, true, false, true},
        {1153, 1024, 1024, Epilogue::None, true, true, true},  {7, 1024, 768, Epilogue::None, false, false, true}};
    for (const auto& c : cases) check_linear(gpu, c, seed += 10);
  }
}

TEST_CASE("cuda layer norm matches the CPU backend, in place and into 16-bit operands") {
  FOCUSPATCH_REQUIRE_GPU();
  const CpuBackend cpu;
  const CudaBackend gpu;
  for (const auto& [rows, width, offset] : {std::tuple{1, 64, 0.0f}, std::tuple{5, 100, 3.0f}, std::tuple{197, 768, 0.0f},
                                            std::tuple{33, 1024, 1000.0f}, std::tuple{2, 1, 0.0f}}) {
    CAPTURE(rows);
    CAPTURE(width);
    const auto x = random_values(static_cast<std::size_t>(rows * width), 7, 2.0f, offset);
    const auto gamma = random_values(static_cast<std::size_t>(width), 8, 1.0f, 1.0f);
    const auto beta = random_values(static_cast<std::size_t>(width), 9, 0.5f);
    std::vector<float> expected(x.size());
    cpu.layer_norm(x.data(), rows, cpu.upload(view_of(gamma, {width})), cpu.upload(view_of(beta, {width})), 1e-5f, expected.data());

    const auto gg = gpu.upload(view_of(gamma, {width})), gb = gpu.upload(view_of(beta, {width}));
    auto gx = gpu.allocate(x.size());
    auto gy = gpu.allocate_operands(x.size());
    gpu.write(gx.data(), x.data(), x.size());
    gpu.layer_norm(gx.data(), rows, gg, gb, 1e-5f, gy.data());
    gpu.layer_norm(gx.data(), rows, gg, gb, 1e-5f, gx.data());  // in place, fp32
    const auto in_place = read_back(gpu, gx, x.size());
    const auto operands = read_back(gpu, gy, x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      // Normalized values are O(1) times gamma (<= 2) plus beta: absolute bounds. A width of 1
      // normalizes to exactly 0 on both sides.
      CHECK(std::fabs(in_place[i] - expected[i]) <= 2e-5 * (1.0 + std::fabs(expected[i])));
      CHECK(std::fabs(operands[i] - expected[i]) <= (unit16(CudaPrecision::F16) + 2e-5) * (1.0 + std::fabs(expected[i])));
    }
  }
}

TEST_CASE("cuda attention through the backend matches the CPU backend") {
  FOCUSPATCH_REQUIRE_GPU();
  const CpuBackend cpu;
  for (const CudaPrecision p : {CudaPrecision::F16, CudaPrecision::BF16}) {
    const CudaBackend gpu(CudaOptions{0, p});
    for (const auto& [batch, seq, heads, head_dim, causal, kind] :
         {std::tuple{2, 197, 12, 64, false, AttentionKind::QueryKey}, std::tuple{3, 77, 8, 64, true, AttentionKind::QueryKey},
          std::tuple{1, 577, 16, 64, false, AttentionKind::ValueValue}, std::tuple{2, 50, 4, 80, false, AttentionKind::QueryKey}}) {
      CAPTURE(name_of(p));
      CAPTURE(seq);
      CAPTURE(head_dim);
      const std::int64_t width = std::int64_t{heads} * head_dim, rows = std::int64_t{batch} * seq;
      const auto qkv = round16(random_values(static_cast<std::size_t>(rows * 3 * width), 11, 1.5f), p);
      std::vector<float> expected(static_cast<std::size_t>(rows * width));
      cpu.attention(qkv.data(), batch, seq, heads, head_dim, causal, expected.data(), kind);
      auto gq = gpu.allocate_operands(qkv.size());
      auto go = gpu.allocate_operands(expected.size());
      gpu.write(gq.data(), qkv.data(), qkv.size());
      gpu.attention(gq.data(), batch, seq, heads, head_dim, causal, go.data(), kind);
      const auto got = read_back(gpu, go, expected.size());
      // Outputs are convex combinations of values in [-1.5, 1.5]: absolute error from the 16-bit
      // probabilities in P V (2^-11 or 2^-8 relative each) and the output rounding.
      double worst = 0;
      for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, double(std::fabs(got[i] - expected[i])));
      CHECK(worst <= 4 * unit16(p) * 1.5);
    }
  }
}

TEST_CASE("cuda token ops (patchify, class and position embeddings, lookups, gathers) equal the CPU backend's") {
  FOCUSPATCH_REQUIRE_GPU();
  const CpuBackend cpu;
  const CudaBackend gpu;
  const CudaPrecision p = gpu.precision();
  // patchify: 2 images of 3 x 28 x 28 in 14-pixel patches (patch rows of 588, not a multiple of 8).
  const int size = 28, patch = 14;
  const auto images = random_values(2 * 3 * size * size, 21);
  std::vector<float> patches(images.size());
  cpu.patchify(images.data(), 2, size, patch, patches.data());
  auto gi = gpu.allocate(images.size());
  auto gp = gpu.allocate_operands(images.size());
  gpu.write(gi.data(), images.data(), images.size());
  gpu.patchify(gi.data(), 2, size, patch, gp.data());
  CHECK(read_back(gpu, gp, patches.size()) == round16(patches, p));

  // Vision tokens: batch 3, 4 patches + class token, width 40.
  const std::int64_t batch = 3, seq = 5, width = 40;
  const auto embeds = random_values(static_cast<std::size_t>(batch * (seq - 1) * width), 22);
  const auto cls = random_values(static_cast<std::size_t>(width), 23);
  const auto pos = random_values(static_cast<std::size_t>(seq * width), 24);
  std::vector<float> tokens(static_cast<std::size_t>(batch * seq * width));
  cpu.assemble_vision_tokens(embeds.data(), cpu.upload(view_of(cls, {width})), cpu.upload(view_of(pos, {seq, width})), batch, seq,
                             tokens.data());
  auto ge = gpu.allocate(embeds.size());
  auto gt = gpu.allocate(tokens.size());
  gpu.write(ge.data(), embeds.data(), embeds.size());
  const auto gpos = gpu.upload(view_of(pos, {seq, width}));
  gpu.assemble_vision_tokens(ge.data(), gpu.upload(view_of(cls, {width})), gpos, batch, seq, gt.data());
  CHECK(read_back(gpu, gt, tokens.size()) == tokens);  // one fp32 addition each: bit-identical

  // Token lookup + positions, then add_positions again, then a gather of rows.
  const std::int64_t vocab = 30;
  const auto table = random_values(static_cast<std::size_t>(vocab * width), 25);
  const std::vector<std::int32_t> ids = {0, 29, 5, 5, 17, 3, 28, 1, 0, 12};  // 2 sequences of 5
  std::vector<float> embedded(ids.size() * static_cast<std::size_t>(width));
  const auto ctable = cpu.upload(view_of(table, {vocab, width})), cpos = cpu.upload(view_of(pos, {seq, width}));
  cpu.embed_tokens(ids, seq, ctable, cpos, embedded.data());
  cpu.add_positions(embedded.data(), static_cast<std::int64_t>(ids.size()), seq, cpos);
  auto gemb = gpu.allocate(embedded.size());
  gpu.embed_tokens(ids, seq, gpu.upload(view_of(table, {vocab, width})), gpos, gemb.data());
  gpu.add_positions(gemb.data(), static_cast<std::int64_t>(ids.size()), seq, gpos);
  CHECK(read_back(gpu, gemb, embedded.size()) == embedded);

  const std::vector<std::int64_t> rows = {9, 0, 4, 4};
  std::vector<float> gathered(rows.size() * static_cast<std::size_t>(width));
  cpu.gather_rows(embedded.data(), width, rows, gathered.data());
  auto gg = gpu.allocate(gathered.size());
  gpu.gather_rows(gemb.data(), width, rows, gg.data());
  CHECK(read_back(gpu, gg, gathered.size()) == gathered);
}

TEST_CASE("cuda backend refuses values fp16 cannot hold and weights that are not matrices") {
  FOCUSPATCH_REQUIRE_GPU();
  const CudaBackend gpu;
  const std::vector<float> big = {1.0f, 70000.0f};
  CHECK_THROWS_WITH_AS(gpu.upload_matrix(view_of(big, {1, 2})), doctest::Contains("does not fit in fp16"), Error);
  const CudaBackend bf16(CudaOptions{0, CudaPrecision::BF16});
  CHECK_NOTHROW(bf16.upload_matrix(view_of(big, {1, 2})));
  const auto vector_only = gpu.upload(view_of(big, {2}));
  auto x = gpu.allocate_operands(2);
  auto y = gpu.allocate(2);
  const CudaBackend::Weight not_matrix{};
  CHECK_THROWS_WITH_AS(gpu.linear(x.data(), 1, not_matrix, nullptr, y.data()), doctest::Contains("upload_matrix"), Error);
  CHECK(vector_only.data != nullptr);
}

TEST_CASE("cuda backend construction without a GPU fails with the reason") {
  if (!test::cuda_unavailable_reason().empty()) {
    CHECK_THROWS_WITH_AS(CudaBackend(), doctest::Contains("cuda backend"), Error);
    return;
  }
  CHECK_THROWS_WITH_AS(CudaBackend(CudaOptions{999, CudaPrecision::F16}), doctest::Contains("device 999 requested"), Error);
}

// ---- the whole model ------------------------------------------------------------------------------
namespace {

struct TempWeights {
  fs::path path;
  TempWeights(const std::string& preset, std::uint64_t seed, std::optional<DType> dtype = std::nullopt) {
    path = fs::temp_directory_path() / ("focuspatch_test_cuda_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(std::hash<std::string>{}(preset)) + (dtype ? "_16" : "") + ".fpw");
    ConvertOptions options;
    options.dtype = dtype;
    write_clip_weights(random_clip_plan(clip_preset(preset), seed), options, path.string());
  }
  ~TempWeights() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

std::vector<float> preprocessed_images(const ClipConfig& c, std::int64_t batch, std::uint64_t seed) {
  // Pixels as preprocessing makes them: roughly zero-mean, unit-variance.
  return random_values(static_cast<std::size_t>(batch * 3 * c.vision.image_size * c.vision.image_size), seed, 1.7f);
}

}  // namespace

TEST_CASE("cuda CLIP forward agrees with the CPU forward: cosine >= 0.9999 on embeddings and every patch token") {
  FOCUSPATCH_REQUIRE_GPU();
  for (const auto& [preset, dtype] : {std::pair{std::string("ViT-B/16"), std::optional<DType>{}},
                                      std::pair{std::string("ViT-B/16"), std::optional<DType>{DType::F16}},
                                      std::pair{std::string("tiny"), std::optional<DType>{}}}) {
    CAPTURE(preset);
    CAPTURE(dtype.has_value());
    const TempWeights weights(preset, 5, dtype);
    ClipModel<CpuBackend> cpu(weights.path.string());
    ClipModel<CudaBackend> gpu(weights.path.string(), CudaBackend{});
    const ClipConfig& c = cpu.config();
    const std::int64_t batch = 3;
    const auto pixels = preprocessed_images(c, batch, 31);
    VisionRequest request;
    request.projected_layers = {c.vision.layers / 2, c.vision.layers - 1};
    request.layers = {0};
    request.value_value_blocks = std::max(1, c.vision.layers / 2);
    const VisionOutput a = cpu.encode_images(pixels, batch, request);
    const VisionOutput b = gpu.encode_images(pixels, batch, request);
    CHECK(worst_row_cosine(a.image_embeddings, b.image_embeddings) >= 0.9999);
    CHECK(worst_row_cosine(a.patch_tokens, b.patch_tokens) >= 0.9999);
    CHECK(worst_row_cosine(a.value_value_tokens, b.value_value_tokens) >= 0.9999);
    CHECK(worst_row_cosine(a.layer_tokens.at(0), b.layer_tokens.at(0)) >= 0.9999);
    for (int layer : request.projected_layers)
      CHECK(worst_row_cosine(a.projected_layers.at(layer), b.projected_layers.at(layer)) >= 0.9999);

    // The text tower, causal, on sequences of different lengths (the end token has the largest id).
    const std::vector<std::vector<std::int32_t>> ids = {
        {49406, 320, 1125, 539, 320, 49407}, {49406, 49407}, {49406, 5, 9, 4000, 12, 77, 3, 49407}};
    CHECK(worst_row_cosine(cpu.encode_token_ids(ids), gpu.encode_token_ids(ids)) >= 0.9999);
  }
}

TEST_CASE("cuda detector ranks pixels as the CPU detector does on synthesized images (pixel AUROC within 0.001)") {
  FOCUSPATCH_REQUIRE_GPU();
  const fs::path data = fs::temp_directory_path() / ("focuspatch_test_cuda_data_" + std::to_string(::getpid()));
  SyntheticDatasetOptions o;
  o.image_size = 128;
  o.train_good = 2;
  o.test_good = 2;
  o.test_per_defect = 2;
  o.categories = {"washer", "weave"};
  write_synthetic_dataset(data.string(), o);
  const TempWeights weights("ViT-B/16", 9);

  auto run = [&](auto backend) {
    using Backend = decltype(backend);
    ClipModel<Backend> model(weights.path.string(), std::move(backend));
    Detector<Backend> detector(model);
    // Hand-made unit keywords: no tokenizer needed, same on both sides.
    const std::int64_t D = model.config().embed_dim;
    for (const std::string category : {"washer", "weave"}) {
      KeywordEmbeddings k;
      k.object = category;
      k.names = {"flawless", "scratch", "hole"};
      k.kinds = {KeywordKind::Normal, KeywordKind::Anomaly, KeywordKind::Anomaly};
      k.matrix = FloatTensor({3, D});
      for (std::int64_t r = 0; r < 3; ++r) k.matrix.data()[r * D + r * 5] = 1.0f;
      detector.set_keywords(category, k);
    }
    eval::EvaluationOptions options;
    options.shots = 2;
    return eval::evaluate(detector, eval::load_dataset(data, eval::DatasetLayout::MVTec), options);
  };
  const eval::EvaluationReport cpu = run(CpuBackend{});
  const eval::EvaluationReport gpu = run(CudaBackend{});
  fs::remove_all(data);
  REQUIRE(cpu.categories.size() == gpu.categories.size());
  for (std::size_t i = 0; i < cpu.categories.size(); ++i) {
    CAPTURE(cpu.categories[i].name);
    CHECK(std::fabs(cpu.categories[i].pixel.auroc - gpu.categories[i].pixel.auroc) <= 0.001);
    CHECK(std::fabs(cpu.categories[i].image.auroc - gpu.categories[i].image.auroc) <= 0.001);
  }
  REQUIRE(cpu.images.size() == gpu.images.size());
  for (std::size_t i = 0; i < cpu.images.size(); ++i) {
    CHECK(cpu.images[i].routed == gpu.images[i].routed);
    CHECK(gpu.images[i].score == doctest::Approx(cpu.images[i].score).epsilon(2e-3));
  }
}
