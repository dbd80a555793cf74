// The CPU backend's ops one at a time, at the exact shapes one CLIP forward pass runs them, so
// that their times multiplied by how often a forward runs each add up to the whole-model figure of
// bench_clip (README.md has the sum). FLOP counts are the useful arithmetic only (2 per multiply-
// add); bias, activation and softmax are not counted but their time is included.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "focuspatch/backend/cpu.hpp"
#include "focuspatch/core/half.hpp"
#include "peak.hpp"

namespace {

using focuspatch::CpuBackend;
using focuspatch::Epilogue;
using focuspatch::FloatTensor;

// Deterministic values in [-scale, scale): the ops' speed does not depend on them, but NaNs or
// denormals would.
FloatTensor filled(focuspatch::Shape shape, float scale, std::uint32_t seed) {
  FloatTensor t(std::move(shape));
  std::uint32_t state = seed * 2654435761u + 1u;
  for (float& v : t.values()) {
    state = state * 1664525u + 1013904223u;
    v = scale * (static_cast<float>(state >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
  return t;
}

// How the transformer calls each linear layer (model/transformer.hpp): the residual projections
// accumulate into the stream, the MLP's first layer applies the activation.
enum class Use { Plain, Residual, Activated };

struct LinearCase {
  std::string name;
  std::int64_t rows, in, out;
  Use use;
  bool bias;
  focuspatch::DType weights = focuspatch::DType::F32;  // F16: read in place from half storage, widened while packing
  focuspatch::CpuPrecision precision = focuspatch::CpuPrecision::F32;  // BF16: packed at load, bf16 products
};

void linear(benchmark::State& state, const LinearCase& c) {
  const CpuBackend be(focuspatch::CpuOptions{c.precision});
  if (c.precision == focuspatch::CpuPrecision::BF16 && !focuspatch::is_bf16(be.linear_path())) {
    state.SkipWithError(("this machine runs " + be.description()).c_str());
    return;
  }
  const FloatTensor weight_values = filled({c.out, c.in}, 1.0f / 32.0f, 1);
  std::vector<std::uint16_t> halves;
  for (float v : weight_values.values()) halves.push_back(focuspatch::float_to_half(v));
  const auto weight = c.weights == focuspatch::DType::F16
                          ? be.upload_matrix(focuspatch::TensorView{focuspatch::DType::F16, {c.out, c.in}, halves.data()})
                          : be.upload_matrix(focuspatch::TensorView{focuspatch::DType::F32, {c.out, c.in}, weight_values.data()});
  const auto bias = be.upload(filled({c.out}, 0.02f, 2));
  const FloatTensor x = filled({c.rows, c.in}, 1.0f, 3);
  auto y = be.allocate(static_cast<std::size_t>(c.rows * c.out));
  auto run = [&] {
    const auto* b = c.bias ? &bias : nullptr;
    if (c.use == Use::Residual) be.linear(x.data(), c.rows, weight, b, y.data(), Epilogue::None, /*accumulate=*/true);
    else be.linear(x.data(), c.rows, weight, b, y.data(), c.use == Use::Activated ? Epilogue::QuickGelu : Epilogue::None);
  };
  if (c.use == Use::Residual) std::fill_n(y.data(), y.size(), 0.0f);
  run();  // warm: pages touched, caches and OpenMP threads up
  for (auto _ : state) {
    run();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  focuspatch::bench::report_flops(state, 2.0 * static_cast<double>(c.rows * c.in * c.out), focuspatch::bench::peak_of(be.linear_path()));
}

struct AttentionCase {
  std::string name;
  std::int64_t batch, seq;
  int heads, head_dim;
  bool causal;
  focuspatch::CpuPrecision precision = focuspatch::CpuPrecision::F32;  // BF16: both products in bf16 (AMX or vdpbf16ps)
};

void attention(benchmark::State& state, const AttentionCase& c) {
  const CpuBackend be(focuspatch::CpuOptions{c.precision});
  const bool bf16 = be.attention_path() != focuspatch::CpuAttentionPath::F32;
  state.SetLabel(focuspatch::cpu_attention_path_name(be.attention_path()));
  if (c.precision == focuspatch::CpuPrecision::BF16 && !bf16) {
    const std::string path = focuspatch::cpu_attention_path_name(be.attention_path());
    state.SkipWithError(("this machine runs attention in " + path).c_str());
    return;
  }
  const std::int64_t width = std::int64_t{c.heads} * c.head_dim;
  const FloatTensor qkv = filled({c.batch * c.seq, 3 * width}, 1.0f, 4);
  auto out = be.allocate(static_cast<std::size_t>(c.batch * c.seq * width));
  be.attention(qkv.data(), c.batch, c.seq, c.heads, c.head_dim, c.causal, out.data());
  for (auto _ : state) {
    be.attention(qkv.data(), c.batch, c.seq, c.heads, c.head_dim, c.causal, out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  // Q K^T and P V, 2 * seq^2 * head_dim each per head. Causal: the kernels stop each tile of
  // queries at its last row's diagonal, so the useful work, half the square, is what is counted
  // (as bench_cuda counts it); the tiles' few products past the diagonal are not.
  focuspatch::bench::report_flops(state, 4.0 * static_cast<double>(c.batch * c.seq * c.seq * width) * (c.causal ? 0.5 : 1.0),
                                  focuspatch::bench::peak_of(be.attention_path()));
}

void layer_norm(benchmark::State& state, std::int64_t rows, std::int64_t width) {
  const CpuBackend be;
  const auto gamma = be.upload(filled({width}, 0.1f, 5));
  const auto beta = be.upload(filled({width}, 0.1f, 6));
  const FloatTensor x = filled({rows, width}, 1.0f, 7);
  auto y = be.allocate(static_cast<std::size_t>(rows * width));
  be.layer_norm(x.data(), rows, gamma, beta, 1e-5f, y.data());
  for (auto _ : state) {
    be.layer_norm(x.data(), rows, gamma, beta, 1e-5f, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  // Memory-bound: one read of x, one write of y (the second pass over the row hits L1).
  focuspatch::bench::report_bytes(state, 2.0 * sizeof(float) * static_cast<double>(rows * width));
}

// One transformer layer's linear layers for `rows` token rows of a tower of width w, MLP width m.
void add_block_linears(std::vector<LinearCase>& cases, const std::string& tag, std::int64_t rows, std::int64_t w,
                       std::int64_t m) {
  cases.push_back({tag + "/qkv", rows, w, 3 * w, Use::Plain, true});
  cases.push_back({tag + "/out", rows, w, w, Use::Residual, true});
  cases.push_back({tag + "/fc+quickgelu", rows, w, m, Use::Activated, true});
  cases.push_back({tag + "/proj", rows, m, w, Use::Residual, true});
}

void register_all() {
  constexpr std::int64_t vit_seq = 197, vit_patches = 196, vit_w = 768, vit_m = 3072, embed = 512;
  constexpr std::int64_t text_seq = 77, text_w = 512, text_m = 2048;
  std::vector<LinearCase> linears;
  for (std::int64_t batch : {1, 8}) {
    const std::string tag = "ViT-B/16/b" + std::to_string(batch);
    add_block_linears(linears, tag, vit_seq * batch, vit_w, vit_m);
    // Once per forward: the patch embedding (a 16x16 stride-16 conv as one GEMM, no bias) and
    // the projection of every token into the joint space (VisionRequest's default keeps them).
    linears.push_back({tag + "/patch_embed", vit_patches * batch, 3 * 16 * 16, vit_w, Use::Plain, false});
    linears.push_back({tag + "/projection", vit_seq * batch, vit_w, embed, Use::Plain, false});
  }
  add_block_linears(linears, "text/77", text_seq, text_w, text_m);
  // Without the epilogue, to show what the separate bias + QuickGELU pass costs.
  for (std::int64_t batch : {1, 8}) {
    const std::string tag = "ViT-B/16/b" + std::to_string(batch);
    linears.push_back({tag + "/fc(no bias, no act)", vit_seq * batch, vit_w, vit_m, Use::Plain, false});
  }
  linears.push_back({"text/77/fc(no bias, no act)", text_seq, text_w, text_m, Use::Plain, false});
  // fp16 weight files: the same layers reading half-precision matrices.
  for (std::int64_t batch : {1, 8}) {
    std::vector<LinearCase> half;
    add_block_linears(half, "ViT-B/16/b" + std::to_string(batch) + "/f16", vit_seq * batch, vit_w, vit_m);
    for (auto& c : half) c.weights = focuspatch::DType::F16;
    linears.insert(linears.end(), half.begin(), half.end());
  }
  // bf16 products (AVX512-BF16 / AMX), %peak against the measured peak of the path that ran.
  for (std::int64_t batch : {1, 8}) {
    std::vector<LinearCase> bf16;
    const std::string tag = "ViT-B/16/b" + std::to_string(batch) + "/bf16";
    add_block_linears(bf16, tag, vit_seq * batch, vit_w, vit_m);
    bf16.push_back({tag + "/patch_embed", vit_patches * batch, 3 * 16 * 16, vit_w, Use::Plain, false});
    bf16.push_back({tag + "/projection", vit_seq * batch, vit_w, embed, Use::Plain, false});
    for (auto& c : bf16) c.precision = focuspatch::CpuPrecision::BF16;
    linears.insert(linears.end(), bf16.begin(), bf16.end());
  }
  for (const auto& c : linears) {
    const std::string name = "linear/" + c.name + " " + std::to_string(c.rows) + "x" + std::to_string(c.in) + "->" +
                             std::to_string(c.out);
    benchmark::RegisterBenchmark(name.c_str(), linear, c)->UseRealTime()->Unit(benchmark::kMillisecond);
  }

  std::vector<AttentionCase> attentions = {
      {"ViT-B/16/b1 12x64 seq197", 1, vit_seq, 12, 64, false},
      {"ViT-B/16/b8 12x64 seq197", 8, vit_seq, 12, 64, false},
      {"text/b1 8x64 seq77 causal", 1, text_seq, 8, 64, true},
      {"text/b8 8x64 seq77 causal", 8, text_seq, 8, 64, true},
  };
  // The same shapes with bf16 products, %peak against the measured peak of the path that ran.
  for (std::size_t i = 0, n = attentions.size(); i < n; ++i) {
    AttentionCase c = attentions[i];
    c.name += " bf16";
    c.precision = focuspatch::CpuPrecision::BF16;
    attentions.push_back(c);
  }
  for (const auto& c : attentions)
    benchmark::RegisterBenchmark(("attention/" + c.name).c_str(), attention, c)->UseRealTime()->Unit(benchmark::kMillisecond);

  for (std::int64_t batch : {1, 8}) {
    const std::string name = "layer_norm/ViT-B/16/b" + std::to_string(batch) + " " + std::to_string(vit_seq * batch) + "x768";
    benchmark::RegisterBenchmark(name.c_str(), layer_norm, vit_seq * batch, vit_w)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  focuspatch::bench::add_peak_context();
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
