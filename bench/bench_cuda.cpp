// Google Benchmark cases for the CUDA backend: each op at the shapes of the ViT-B/16 (224 px) and
// ViT-L/14 (336 px) forwards, and the image tower end to end at batch 1, 8 and 64, on random
// weights (every FLOP and byte of the released models, none of their meaning).
//
// Timing: work is enqueued on the backend's stream and the clock stops after synchronize(), so a
// figure includes launch overhead (what a caller waits for). Per-op cases enqueue kRepeat ops per
// timed iteration so the one synchronization per iteration is spread thin.
//
// FLOPs are counted as for the CPU (clip_workload.hpp: 2 per multiply-add of the matrix products
// and attention; LayerNorm, bias, activations, softmax not counted). "%peak" is against the GPU's
// dense fp16 tensor-core peak with fp32 accumulation from its data sheet (FOCUSPATCH_GPU_PEAK_TFLOPS
// overrides): H100/H200 SXM 989.4 TFLOP/s, H100 PCIe 756, A100 312. The "bytes" of memory-bound
// ops are their compulsory traffic against FOCUSPATCH_GPU_BANDWIDTH_GBS (H100 SXM 3350 GB/s,
// H200 4800, H100 PCIe 2000, A100 80GB 2039).
//
//   build/bench/bench_cuda --benchmark_filter=forward   # the end-to-end cases only
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "focuspatch/backend/cuda.hpp"
#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/convert/random_clip.hpp"
#include "clip_workload.hpp"
#include "focuspatch/model/clip_model.hpp"

namespace {

namespace fs = std::filesystem;
using focuspatch::ClipModel;
using focuspatch::CudaBackend;
using focuspatch::CudaOptions;
using focuspatch::CudaPrecision;

constexpr int kRepeat = 20;

CudaBackend& backend() {
  static CudaBackend be;
  return be;
}

struct GpuLimits {
  double flops = 0, bytes_per_s = 0;
};

double env_or(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v ? std::atof(v) : fallback;
}

const GpuLimits& limits() {
  static const GpuLimits l = [] {
    const std::string name = backend().device_name();
    auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
    double tflops = 989.4, gbs = 3350;  // H100 SXM
    if (has("H200")) gbs = 4800;
    if (has("PCIe")) tflops = 756, gbs = 2000;
    if (has("A100")) tflops = 312, gbs = 2039;
    return GpuLimits{1e12 * env_or("FOCUSPATCH_GPU_PEAK_TFLOPS", tflops), 1e9 * env_or("FOCUSPATCH_GPU_BANDWIDTH_GBS", gbs)};
  }();
  return l;
}

void report_flops(benchmark::State& state, double flops) {
  state.counters["TFLOP/s"] = benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["%peak"] = benchmark::Counter(100.0 * flops / limits().flops, benchmark::Counter::kIsIterationInvariantRate);
}
void report_bytes(benchmark::State& state, double bytes) {
  state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["%bandwidth"] = benchmark::Counter(100.0 * bytes / limits().bytes_per_s, benchmark::Counter::kIsIterationInvariantRate);
}

// Runs `enqueue` kRepeat times per iteration and reports the time per call.
template <class F>
void time_ops(benchmark::State& state, F&& enqueue) {
  const CudaBackend& be = backend();
  enqueue();  // plans, first-touch allocations
  be.synchronize();
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRepeat; ++i) enqueue();
    be.synchronize();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / kRepeat);
  }
}

focuspatch::TensorView zero_view(std::vector<float>& storage, focuspatch::Shape shape) {
  storage.assign(static_cast<std::size_t>(focuspatch::element_count(shape)), 0.01f);
  return focuspatch::TensorView{focuspatch::DType::F32, std::move(shape), storage.data()};
}

void linear(benchmark::State& state, std::int64_t rows, std::int64_t in, std::int64_t out, focuspatch::Epilogue epilogue, bool f32_out) {
  const CudaBackend& be = backend();
  std::vector<float> w_host, b_host;
  const auto w = be.upload_matrix(zero_view(w_host, {out, in}));
  const auto b = be.upload(zero_view(b_host, {out}));
  auto x = be.allocate_operands(static_cast<std::size_t>(rows * in));
  auto y32 = be.allocate(f32_out ? static_cast<std::size_t>(rows * out) : 0);
  auto y16 = be.allocate_operands(f32_out ? 0 : static_cast<std::size_t>(rows * out));
  time_ops(state, [&] {
    if (f32_out)
      be.linear(x.data(), rows, w, &b, y32.data(), epilogue, /*accumulate=*/true);
    else
      be.linear(x.data(), rows, w, &b, y16.data(), epilogue);
  });
  report_flops(state, 2.0 * static_cast<double>(rows) * static_cast<double>(in) * static_cast<double>(out));
}

void attention(benchmark::State& state, std::int64_t batch, std::int64_t seq, int heads, bool causal, focuspatch::AttentionKind kind) {
  const CudaBackend& be = backend();
  const int head_dim = 64;
  const std::int64_t width = std::int64_t{heads} * head_dim;
  auto qkv = be.allocate_operands(static_cast<std::size_t>(batch * seq * 3 * width));
  auto out = be.allocate_operands(static_cast<std::size_t>(batch * seq * width));
  const std::vector<float> host(qkv.size(), 0.1f);
  be.write(qkv.data(), host.data(), host.size());
  time_ops(state, [&] { be.attention(qkv.data(), batch, seq, heads, head_dim, causal, out.data(), kind); });
  report_flops(state, 4.0 * static_cast<double>(batch * seq) * static_cast<double>(seq * width) * (causal ? 0.5 : 1.0));
}

void layer_norm(benchmark::State& state, std::int64_t rows, std::int64_t width) {
  const CudaBackend& be = backend();
  std::vector<float> g_host, b_host;
  const auto g = be.upload(zero_view(g_host, {width})), b = be.upload(zero_view(b_host, {width}));
  auto x = be.allocate(static_cast<std::size_t>(rows * width));
  auto y = be.allocate_operands(static_cast<std::size_t>(rows * width));
  time_ops(state, [&] { be.layer_norm(x.data(), rows, g, b, 1e-5f, y.data()); });
  report_bytes(state, static_cast<double>(rows * width) * (4 + 2));
}

// ---- end to end ----------------------------------------------------------------------------------
// Random-weight files (fp16, as a deployment would convert them) and their models, made on first
// use; the files are removed at exit.
struct Models {
  std::map<std::string, fs::path> files;
  std::map<std::string, std::unique_ptr<ClipModel<CudaBackend>>> models;
  ~Models() {
    models.clear();
    std::error_code ignored;
    for (const auto& [k, p] : files) fs::remove(p, ignored);
  }
  ClipModel<CudaBackend>& get(const std::string& preset) {
    auto it = models.find(preset);
    if (it != models.end()) return *it->second;
    std::string stem = preset;
    for (char& ch : stem)
      if (ch == '/' || ch == '@') ch = '-';
    const fs::path path = fs::temp_directory_path() / ("focuspatch-bench-cuda-" + stem + ".fpw");
    focuspatch::ConvertOptions options;
    options.dtype = focuspatch::DType::F16;
    focuspatch::write_clip_weights(focuspatch::random_clip_plan(focuspatch::clip_preset(preset), 2024), options, path.string());
    files[preset] = path;
    return *models.emplace(preset, std::make_unique<ClipModel<CudaBackend>>(path.string(), backend())).first->second;
  }
};
Models& models() {
  static Models m;
  return m;
}

// staged: pixels already on the device and only the image embeddings read back (what PyTorch's
// timing of a GPU-resident forward measures; ln_post + projection then run on the class tokens
// only, 0.4 % fewer FLOPs than projecting every token). Otherwise encode_images as a caller uses
// it: pixels uploaded, every token projected and read back.
void forward(benchmark::State& state, const std::string& preset, std::int64_t batch, bool staged) {
  ClipModel<CudaBackend>& model = models().get(preset);
  const int size = model.config().vision.image_size;
  const auto pixels = focuspatch::bench::random_images(batch, size);
  ClipModel<CudaBackend>::Workspace ws;
  focuspatch::VisionRequest request;
  request.patch_tokens = !staged;
  model.encode_images(pixels, batch, request, ws);  // allocations, plans
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    if (staged)
      benchmark::DoNotOptimize(model.vision().encode_staged(model.backend(), batch, size, request, ws.vision));
    else
      benchmark::DoNotOptimize(model.encode_images(pixels, batch, request, ws));
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  report_flops(state, focuspatch::bench::vision_flops(model.config(), batch));
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  using benchmark::RegisterBenchmark;
  using focuspatch::Epilogue;
  auto add = [](benchmark::internal::Benchmark* b) { b->UseManualTime()->Unit(benchmark::kMicrosecond); };
  // ViT-B/16 at batch 64: 64 x 197 = 12608 token rows, width 768, MLP 3072.
  const std::int64_t b16 = 64 * 197;
  add(RegisterBenchmark("linear/qkv/12608x768x2304/f16", linear, b16, 768, 2304, Epilogue::None, false));
  add(RegisterBenchmark("linear/out+residual/12608x768x768/f32", linear, b16, 768, 768, Epilogue::None, true));
  add(RegisterBenchmark("linear/fc+quickgelu/12608x768x3072/f16", linear, b16, 768, 3072, Epilogue::QuickGelu, false));
  add(RegisterBenchmark("linear/proj+residual/12608x3072x768/f32", linear, b16, 3072, 768, Epilogue::None, true));
  add(RegisterBenchmark("linear/qkv/197x768x2304/f16", linear, std::int64_t{197}, 768, 2304, Epilogue::None, false));
  add(RegisterBenchmark("attention/ViT-B/16/b64 seq197 12 heads", attention, 64, 197, 12, false, focuspatch::AttentionKind::QueryKey));
  add(RegisterBenchmark("attention/ViT-B/16/b64 value-value", attention, 64, 197, 12, false, focuspatch::AttentionKind::ValueValue));
  add(RegisterBenchmark("attention/ViT-L/14@336/b64 seq577 16 heads", attention, 64, 577, 16, false,
                        focuspatch::AttentionKind::QueryKey));
  add(RegisterBenchmark("attention/ViT-L/14@336/b1 seq577 16 heads", attention, 1, 577, 16, false, focuspatch::AttentionKind::QueryKey));
  add(RegisterBenchmark("attention/text/b32 seq77 8 heads causal", attention, 32, 77, 8, true, focuspatch::AttentionKind::QueryKey));
  add(RegisterBenchmark("layer_norm/12608x768", layer_norm, b16, std::int64_t{768}));
  for (const std::string preset : {"ViT-B/16", "ViT-L/14@336px"})
    for (std::int64_t batch : {1, 8, 64}) {
      for (bool staged : {true, false})
        RegisterBenchmark(("forward/" + preset + "/b" + std::to_string(batch) + (staged ? "/staged" : "/with transfers")).c_str(), forward,
                          preset, batch, staged)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
    }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  try {
    benchmark::AddCustomContext("gpu", backend().device_name());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
  benchmark::AddCustomContext("gpu_peak_tflops_f16", std::to_string(limits().flops / 1e12));
  benchmark::AddCustomContext("gpu_bandwidth_gbs", std::to_string(limits().bytes_per_s / 1e9));
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
