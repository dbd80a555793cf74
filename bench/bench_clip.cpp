// Whole-model CLIP on the CPU backend: image and text encoders of OpenAI's architectures with
// random weights (every FLOP and byte of the released models, none of their meaning), written to a
// temporary .fpw file once per process and loaded like a real one.
//
// FLOPs and inputs: clip_workload.hpp (ViT-B/16 at 224: 35.3 GFLOP per image).
//
// ViT-L/14 benchmarks are named Optional/...: left out unless a --benchmark_filter names them
// (writing its 1.7 GB of random weights alone takes a while).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "focuspatch/convert/clip_converter.hpp"
#include "focuspatch/convert/random_clip.hpp"
#include "focuspatch/model/clip_model.hpp"
#include "clip_workload.hpp"
#include "peak.hpp"

namespace {

namespace fs = std::filesystem;
using focuspatch::ClipModel;
using focuspatch::CpuPrecision;
using focuspatch::DType;

using focuspatch::bench::random_images;
using focuspatch::bench::text_flops;
using focuspatch::bench::vision_flops;

// Random-weight files and their loaded models, made on first use and shared by the benchmarks;
// the files are removed when the program ends.
class Models {
 public:
  ~Models() {
    workspaces_.clear();
    models_.clear();
    std::error_code ignored;
    for (const auto& [key, path] : files_) fs::remove(path, ignored);
  }

  const fs::path& file(const std::string& preset, DType dtype) {
    const std::string key = preset + "/" + std::string(focuspatch::dtype_name(dtype));
    auto it = files_.find(key);
    if (it != files_.end()) return it->second;
    std::string stem = key;
    for (char& ch : stem)
      if (ch == '/' || ch == '@') ch = '-';
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    fs::path path = fs::temp_directory_path() / ("focuspatch-bench-" + stem + "-" + std::to_string(stamp) + ".fpw");
    focuspatch::ConvertOptions options;
    options.dtype = dtype;
    focuspatch::write_clip_weights(focuspatch::random_clip_plan(focuspatch::clip_preset(preset), 2024), options, path.string());
    return files_.emplace(key, std::move(path)).first->second;
  }

  const ClipModel<>& model(const std::string& preset, DType dtype, CpuPrecision precision = CpuPrecision::F32) {
    const fs::path& path = file(preset, dtype);
    const std::string key = path.string() + "/" + cpu_precision_name(precision);
    auto it = models_.find(key);
    if (it == models_.end())
      it = models_.emplace(key, std::make_unique<ClipModel<>>(path.string(), focuspatch::CpuBackend(focuspatch::CpuOptions{precision}))).first;
    return *it->second;
  }

  // One workspace per benchmark (key: what it runs), kept across its repetitions, so that the
  // untimed warm-up forward (workspace allocated, weight pages faulted in) runs once per benchmark,
  // not once per repetition: bench/compare.py runs each benchmark as 1-iteration repetitions.
  ClipModel<>::Workspace& workspace(const std::string& key, bool& fresh) {
    auto [it, inserted] = workspaces_.try_emplace(key);
    fresh = inserted;
    return it->second;
  }

 private:
  std::map<std::string, fs::path> files_;
  std::map<std::string, std::unique_ptr<ClipModel<>>> models_;
  std::map<std::string, ClipModel<>::Workspace> workspaces_;
};

Models& models() {
  static Models m;
  return m;
}

// The path that ran goes into the benchmark's label ("cpu bf16 avx512bf16"); a bf16 request this
// machine cannot serve is reported as an error rather than timed as fp32 under a bf16 name.
bool check_path(benchmark::State& state, const ClipModel<>& model, CpuPrecision precision) {
  state.SetLabel(model.backend().description());
  if (precision == CpuPrecision::BF16 && !focuspatch::is_bf16(model.backend().linear_path())) {
    state.SkipWithError(("this machine runs " + model.backend().description()).c_str());
    return false;
  }
  return true;
}

void encode_images(benchmark::State& state, const std::string& preset, DType dtype, std::int64_t batch, CpuPrecision precision) {
  const auto& model = models().model(preset, dtype, precision);
  if (!check_path(state, model, precision)) return;
  const int size = model.config().vision.image_size;
  const auto images = random_images(batch, size);
  bool fresh = false;
  const std::string key = "images/" + preset + "/" + std::string(focuspatch::dtype_name(dtype)) + "/" + std::to_string(batch) + "/" +
                          cpu_precision_name(precision);
  ClipModel<>::Workspace& ws = models().workspace(key, fresh);
  const focuspatch::VisionRequest request;  // the default: patch tokens too, as FocusPatch uses them
  if (fresh) {
    const auto warm = model.encode_images(images, batch, request, ws);  // workspace allocated, weight pages in
    benchmark::DoNotOptimize(warm.image_embeddings.data());
  }
  for (auto _ : state) {
    auto out = model.encode_images(images, batch, request, ws);
    benchmark::DoNotOptimize(out.image_embeddings.data());
  }
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
  focuspatch::bench::report_flops(state, vision_flops(model.config(), batch), focuspatch::bench::peak_of(model.backend().linear_path()));
}

// Token ids for sequences of the given lengths: start and end of text around arbitrary word ids.
std::vector<std::vector<std::int32_t>> prompts(const std::vector<int>& lengths) {
  constexpr std::int32_t start_of_text = 49406, end_of_text = 49407;
  std::vector<std::vector<std::int32_t>> ids;
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    std::vector<std::int32_t> seq{start_of_text};
    for (int j = 1; j + 1 < lengths[i]; ++j)
      seq.push_back(static_cast<std::int32_t>((7919 * (i + 1) + 104729 * j) % start_of_text));
    seq.push_back(end_of_text);
    ids.push_back(std::move(seq));
  }
  return ids;
}

void encode_token_ids(benchmark::State& state, const std::string& preset, std::vector<int> lengths, CpuPrecision precision) {
  const auto& model = models().model(preset, DType::F32, precision);
  if (!check_path(state, model, precision)) return;
  const auto ids = prompts(lengths);
  std::int64_t longest = 0;
  for (int l : lengths) longest = std::max<std::int64_t>(longest, l);
  std::string key = "text/" + preset + "/" + cpu_precision_name(precision);
  for (int l : lengths) key += "/" + std::to_string(l);
  bool fresh = false;
  ClipModel<>::Workspace& ws = models().workspace(key, fresh);
  if (fresh) {
    const auto warm = model.encode_token_ids(ids, ws);
    benchmark::DoNotOptimize(warm.data());
  }
  for (auto _ : state) {
    auto out = model.encode_token_ids(ids, ws);
    benchmark::DoNotOptimize(out.data());
  }
  const auto n = static_cast<std::int64_t>(ids.size());
  state.counters["prompts/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  focuspatch::bench::report_flops(state, text_flops(model.config(), n, longest), focuspatch::bench::peak_of(model.backend().linear_path()));
}

// Opening a converted file: fp32 weights are used in place from the mapping, fp16 ones decoded to
// fp32 once here (cpu.hpp upload()).
void load(benchmark::State& state, const std::string& preset, DType dtype) {
  const std::string path = models().file(preset, dtype).string();
  for (auto _ : state) {
    ClipModel<> model(path);
    benchmark::DoNotOptimize(&model);
  }
  state.counters["bytes"] = static_cast<double>(fs::file_size(path));
}

void register_all() {
  using benchmark::RegisterBenchmark;
  const std::string b16 = "ViT-B/16";
  for (std::int64_t batch : {1, 8})
    RegisterBenchmark(("encode_images/ViT-B/16/f32/b" + std::to_string(batch)).c_str(), encode_images, b16, DType::F32, batch, CpuPrecision::F32)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  // bf16 products from the same fp32 file (weights packed to bf16 at load): bench/compare.py's
  // "ours-bf16" column.
  for (std::int64_t batch : {1, 8})
    RegisterBenchmark(("encode_images/ViT-B/16/bf16-compute/b" + std::to_string(batch)).c_str(), encode_images, b16, DType::F32, batch,
                      CpuPrecision::BF16)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  RegisterBenchmark("encode_token_ids/ViT-B/16/bf16-compute/32 prompts 77 tokens", encode_token_ids, b16, std::vector<int>(32, 77),
                    CpuPrecision::BF16)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  RegisterBenchmark("encode_images/ViT-B/16/f16/b1", encode_images, b16, DType::F16, std::int64_t{1}, CpuPrecision::F32)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  // Eight prompt-ensemble-like sentences ("a photo of a damaged bottle with a crack.") with their
  // start and end tokens; the batch is padded to the longest, 17.
  RegisterBenchmark("encode_token_ids/ViT-B/16/8 prompts 8..17 tokens", encode_token_ids, b16,
                    std::vector<int>{9, 12, 8, 15, 11, 17, 10, 13}, CpuPrecision::F32)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  // The same eight at the full context, as implementations that always pad to 77 run them.
  RegisterBenchmark("encode_token_ids/ViT-B/16/8 prompts 77 tokens", encode_token_ids, b16, std::vector<int>(8, 77), CpuPrecision::F32)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  // A batch of 32 full-context prompts: the text-tower shape bench/compare.py times against PyTorch
  // and ONNX Runtime (which pad to 77 tokens).
  RegisterBenchmark("encode_token_ids/ViT-B/16/32 prompts 77 tokens", encode_token_ids, b16, std::vector<int>(32, 77), CpuPrecision::F32)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  for (DType dtype : {DType::F32, DType::F16})
    RegisterBenchmark(("load/ViT-B/16/" + std::string(focuspatch::dtype_name(dtype))).c_str(), load, b16, dtype)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  RegisterBenchmark("Optional/encode_images/ViT-L/14/f32/b1", encode_images, std::string("ViT-L/14"), DType::F32, std::int64_t{1},
                    CpuPrecision::F32)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const std::string filter = benchmark::GetBenchmarkFilter();
  if (filter.empty() || filter == "." || filter == "all") benchmark::SetBenchmarkFilter("-Optional");
  focuspatch::bench::add_peak_context();
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
