// The GPU anomaly post-processing (kernels/memory_search.cu, kernels/anomaly_maps.cu) against the CPU
// code it mirrors: MemoryBank::nearest_distances and its row normalisation, upsample_bilinear and
// gaussian_smooth (themselves checked against PyTorch and scipy in test_maps / test_memory), plus a
// double-precision nearest-neighbour search as the exact answer for the float inputs.
//
// Tolerances, with u = 2^-24 the fp32 unit roundoff:
//   - distances: a D-term fp32 dot product of unit vectors rounds each partial sum (at most 1 in
//     size, by Cauchy-Schwarz) with an error of at most u times it: D u in the worst case, but the
//     errors are independent and of either sign, so they add up like a random walk, typically
//     ~u sqrt(D) / 2. We allow (8 sqrt(D) + 4) u against the exact (double) answer, the + 4 u for
//     the rounding of max and of 1 - max; twice that against MemoryBank, whose Eigen product
//     rounds on its own. TF32 or bf16 arithmetic (inputs rounded to 10 or 7 bits, 2^-11 or more)
//     is off by ~1e-4 on the near-duplicate case, 10 times outside, which is why that case exists.
//   - normalised rows: one float ulp (2 u |x|): the only difference from the CPU is the order of
//     a double-precision sum, ~1e-16 relative, which can move the final rounding by one ulp.
//   - maps: the kernels repeat the CPU's operations in the CPU's order and precision, so results
//     are mostly bit-identical; but this test's host code is built with -march=native in GNU mode,
//     where the compiler may fuse the CPU's double multiply-adds (tap positions, blends, Gaussian
//     sums), which can move a float rounding or a tap weight by one ulp. We allow 8 u times the
//     largest input value (4 ulps of it); a wrong sampling convention or boundary rule is off by
//     1e-3 and more.
#include <doctest/doctest.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "anomaly_maps.cuh"
#include "cuda_check.cuh"
#include "cuda_test_support.hpp"
#include "focuspatch/anomaly/anomaly_map.hpp"
#include "focuspatch/anomaly/memory_bank.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/core/tensor.hpp"
#include "memory_search.cuh"

using namespace focuspatch;

namespace {

constexpr double kUnitRoundoff = 1.0 / 16777216.0;  // 2^-24

// A stream that does not synchronise with the legacy default stream, so a kernel or GEMM issued
// on the wrong stream shows up as a race rather than being hidden by implicit ordering.
class GpuContext {
 public:
  GpuContext() {
    cuda::check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    cuda::check(cublasCreate(&handle_), "cublasCreate");
  }
  ~GpuContext() {
    cublasDestroy(handle_);
    cudaStreamDestroy(stream_);
  }
  GpuContext(const GpuContext&) = delete;
  GpuContext& operator=(const GpuContext&) = delete;
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t handle() const { return handle_; }
  void sync() const { cuda::check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

 private:
  cudaStream_t stream_ = nullptr;
  cublasHandle_t handle_ = nullptr;
};

// Device memory; transfers are ordered on the test's stream.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t count) : count_(count) {
    cuda::check(cudaMalloc(reinterpret_cast<void**>(&data_), std::max<std::size_t>(count_, 1) * sizeof(T)), "cudaMalloc");
  }
  DeviceBuffer(const std::vector<T>& host, const GpuContext& gpu) : DeviceBuffer(host.size()) { upload(host, gpu); }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return data_; }
  void upload(const std::vector<T>& host, const GpuContext& gpu) {
    REQUIRE(host.size() == count_);
    cuda::check(cudaMemcpyAsync(data_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice, gpu.stream()), "upload");
  }
  std::vector<T> download(const GpuContext& gpu) const {
    std::vector<T> host(count_);
    cuda::check(cudaMemcpyAsync(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost, gpu.stream()), "download");
    gpu.sync();
    return host;
  }

 private:
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

std::vector<float> normal_values(std::mt19937& rng, std::size_t n) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

std::vector<float> uniform_values(std::mt19937& rng, std::size_t n) {
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = uniform(rng);
  return v;
}

// A one-layer bank holding `rows` raw patches of width d as one shot (it normalises them).
MemoryBank bank_of(const std::vector<float>& raw, long long rows, long long d) {
  MemoryBank bank({0}, d, "test-weights");
  const FloatTensor patches({rows, d}, raw);
  const std::vector<float> global(static_cast<std::size_t>(d), 1.0f);
  bank.add_shot("tile", std::span<const FloatTensor>(&patches, 1), global, "shot.png");
  return bank;
}

// The rows as MemoryBank normalises them.
std::vector<float> cpu_normalized(const std::vector<float>& raw, long long rows, long long d) {
  const MemoryBank bank = bank_of(raw, rows, d);
  const std::span<const float> p = bank.patches("tile", 0);
  return {p.begin(), p.end()};
}

// clamp(1 - max_m <q, m>, 0, 2) in double on the given float rows: the exact answer for them.
std::vector<double> exact_distances(const std::vector<float>& queries, long long p, const std::vector<float>& memory, long long n,
                                    long long d) {
  using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::MatrixXd q = Eigen::Map<const RowMatrixF>(queries.data(), p, d).cast<double>();
  std::vector<double> best(static_cast<std::size_t>(p), -std::numeric_limits<double>::infinity());
  constexpr long long kBlock = 1024;
  for (long long start = 0; start < n; start += kBlock) {
    const long long rows = std::min(kBlock, n - start);
    const Eigen::MatrixXd m = Eigen::Map<const RowMatrixF>(memory.data() + start * d, rows, d).cast<double>();
    const Eigen::MatrixXd sims = q * m.transpose();
    for (long long i = 0; i < p; ++i) {
      double& b = best[static_cast<std::size_t>(i)];
      b = std::max(b, sims.row(i).maxCoeff());
    }
  }
  for (auto& b : best) b = std::clamp(1.0 - b, 0.0, 2.0);
  return best;
}

double distance_tolerance(long long d) { return (8.0 * std::sqrt(static_cast<double>(d)) + 4.0) * kUnitRoundoff; }

struct SearchResult {
  std::vector<float> gpu;
  std::vector<float> normalized_queries;  // by the GPU
  int degenerate_rows = -1;
};

// Raw queries normalised on the GPU, then searched in normalised memory, block_rows at a time.
SearchResult gpu_search(const GpuContext& gpu, const std::vector<float>& raw_queries, long long p,
                        const std::vector<float>& normalized_memory, long long n, long long d, long long block_rows) {
  DeviceBuffer<float> queries(raw_queries, gpu);
  DeviceBuffer<float> memory(normalized_memory, gpu);
  DeviceBuffer<float> distances(static_cast<std::size_t>(p));
  DeviceBuffer<float> scratch(cuda::nearest_cosine_scratch_floats(p, block_rows));
  DeviceBuffer<int> degenerate(1);
  cuda::check(cudaMemsetAsync(degenerate.get(), 0, sizeof(int), gpu.stream()), "cudaMemsetAsync");
  cuda::normalize_rows(queries.get(), p, d, gpu.stream(), degenerate.get());
  cuda::nearest_cosine_distances(gpu.handle(), queries.get(), p, memory.get(), n, d, distances.get(), scratch.get(), block_rows,
                                 gpu.stream());
  SearchResult r;
  r.gpu = distances.download(gpu);
  r.normalized_queries = queries.download(gpu);
  r.degenerate_rows = degenerate.download(gpu)[0];
  return r;
}

// Every GPU distance within tolerance of the exact answer and of MemoryBank's.
void check_search(const GpuContext& gpu, const std::vector<float>& raw_queries, long long p, const std::vector<float>& raw_memory,
                  long long n, long long d, long long block_rows) {
  CAPTURE(p);
  CAPTURE(n);
  CAPTURE(d);
  CAPTURE(block_rows);
  MemoryBank bank = bank_of(raw_memory, n, d);
  bank.set_block_rows(block_rows);
  const std::span<const float> memory_span = bank.patches("tile", 0);
  const std::vector<float> memory(memory_span.begin(), memory_span.end());
  const std::vector<float> cpu = bank.nearest_distances("tile", 0, FloatTensor({p, d}, raw_queries));
  const std::vector<double> exact = exact_distances(cpu_normalized(raw_queries, p, d), p, memory, n, d);
  const SearchResult r = gpu_search(gpu, raw_queries, p, memory, n, d, block_rows);
  REQUIRE(r.degenerate_rows == 0);
  REQUIRE(r.gpu.size() == static_cast<std::size_t>(p));
  const double tol = distance_tolerance(d);
  double worst_exact = 0.0, worst_cpu = 0.0;
  for (long long i = 0; i < p; ++i) {
    const auto k = static_cast<std::size_t>(i);
    REQUIRE(std::isfinite(r.gpu[k]));
    worst_exact = std::max(worst_exact, std::abs(r.gpu[k] - exact[k]));
    worst_cpu = std::max(worst_cpu, std::abs(static_cast<double>(r.gpu[k]) - cpu[k]));
  }
  CAPTURE(tol);
  CHECK(worst_exact <= tol);
  CHECK(worst_cpu <= 2.0 * tol);
}

// Maps: each value within 8 u of the largest input value (see the top of the file).
void check_maps_close(const std::vector<float>& gpu, const std::vector<float>& cpu, double scale) {
  REQUIRE(gpu.size() == cpu.size());
  const double tol = 8.0 * kUnitRoundoff * scale;
  double worst = 0.0;
  std::size_t bit_identical = 0;
  for (std::size_t i = 0; i < gpu.size(); ++i) {
    REQUIRE(std::isfinite(gpu[i]));
    worst = std::max(worst, std::abs(static_cast<double>(gpu[i]) - cpu[i]));
    if (gpu[i] == cpu[i]) ++bit_identical;
  }
  CAPTURE(tol);
  CAPTURE(bit_identical);
  CAPTURE(gpu.size());
  CHECK(worst <= tol);
}

float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (const float x : v) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace

// ---- memory search ------------------------------------------------------------------------------

TEST_CASE("cuda nearest cosine distances equal MemoryBank's on awkward shapes, over several blocks") {
  FOCUSPATCH_REQUIRE_GPU();
  const GpuContext gpu;
  std::mt19937 rng(20261127);
  struct SearchShape {
    long long queries, memory, dim, block;
  };
  // Blocks that divide the memory unevenly (a last block of 1 row, of 97, of 1), one larger than
  // the memory, and dims 1 (distances exactly 0 or 2), 3, 512 and 768 (CLIP's).
  const SearchShape shapes[] = {{1, 1, 1, 1},        {7, 5, 3, 2},         {7, 1000, 1, 64},      {196, 1000, 512, 300},
                          {1369, 4097, 768, 4096}, {196, 4097, 768, 1000}, {1369, 5, 768, 4096}, {1, 4097, 3, 1000},
                          {7, 1000, 768, 999}};
  for (const SearchShape& s : shapes) {
    const std::vector<float> queries = normal_values(rng, static_cast<std::size_t>(s.queries * s.dim));
    const std::vector<float> memory = normal_values(rng, static_cast<std::size_t>(s.memory * s.dim));
    check_search(gpu, queries, s.queries, memory, s.memory, s.dim, s.block);
  }
}

TEST_CASE("cuda nearest cosine distances keep fp32 precision near zero (no TF32)") {
  FOCUSPATCH_REQUIRE_GPU();
  const GpuContext gpu;
  std::mt19937 rng(7);
  const long long n = 1000, d = 768, p = 196;
  // Memory rows dominated by 8 large components (~0.34 each once normalised) and queries that are
  // small perturbations of memory rows: distances ~1e-4, and inputs rounded to TF32's 10 bits
  // would move each of those 8 products by ~1e-4 of themselves.
  std::vector<float> memory = normal_values(rng, static_cast<std::size_t>(n * d));
  for (long long r = 0; r < n; ++r)
    for (long long j = 0; j < 8; ++j) memory[static_cast<std::size_t>(r * d + j)] *= 30.0f;
  const std::vector<float> noise = normal_values(rng, static_cast<std::size_t>(p * d));
  std::vector<float> queries(static_cast<std::size_t>(p * d));
  for (long long q = 0; q < p; ++q)
    for (long long j = 0; j < d; ++j) {
      const auto k = static_cast<std::size_t>(q * d + j);
      queries[k] = memory[static_cast<std::size_t>(((q * 37) % n) * d + j)] + (q == 0 ? 0.0f : 0.05f * noise[k]);
    }
  // The case tests what it claims: the exact distances are tiny (query 0 is a memory row itself).
  const std::vector<double> exact =
      exact_distances(cpu_normalized(queries, p, d), p, cpu_normalized(memory, n, d), n, d);
  CHECK(*std::max_element(exact.begin(), exact.end()) < 1e-3);
  CHECK(exact[0] < 1e-6);
  check_search(gpu, queries, p, memory, n, d, 300);
}

TEST_CASE("cuda nearest cosine distances: NaN in memory gives NaN distances; the handle is left as found") {
  FOCUSPATCH_REQUIRE_GPU();
  const GpuContext gpu;
  std::mt19937 rng(3);
  const long long p = 7, n = 5, d = 3;
  const std::vector<float> queries = cpu_normalized(normal_values(rng, p * d), p, d);
  std::vector<float> memory = cpu_normalized(normal_values(rng, n * d), n, d);
  memory[3 * d + 1] = std::numeric_limits<float>::quiet_NaN();
  DeviceBuffer<float> dq(queries, gpu), dm(memory, gpu), distances(p), scratch(cuda::nearest_cosine_scratch_floats(p, 2));
  // A caller's handle on another stream in device pointer mode: both are restored afterwards.
  cuda::check(cublasSetStream(gpu.handle(), nullptr), "cublasSetStream");
  cuda::check(cublasSetPointerMode(gpu.handle(), CUBLAS_POINTER_MODE_DEVICE), "cublasSetPointerMode");
  cuda::nearest_cosine_distances(gpu.handle(), dq.get(), p, dm.get(), n, d, distances.get(), scratch.get(), 2, gpu.stream());
  const std::vector<float> got = distances.download(gpu);
  for (const float v : got) CHECK(std::isnan(v));
  cudaStream_t stream = gpu.stream();
  cublasPointerMode_t mode = CUBLAS_POINTER_MODE_HOST;
  cuda::check(cublasGetStream(gpu.handle(), &stream), "cublasGetStream");
  cuda::check(cublasGetPointerMode(gpu.handle(), &mode), "cublasGetPointerMode");
  CHECK(stream == nullptr);
  CHECK(mode == CUBLAS_POINTER_MODE_DEVICE);
}

TEST_CASE("cuda normalize_rows equals MemoryBank's normalisation; rows without a direction become NaN and are counted") {
  FOCUSPATCH_REQUIRE_GPU();
  const GpuContext gpu;
  std::mt19937 rng(11);
  for (const long long count : {1LL, 7LL, 196LL})
    for (const long long d : {1LL, 3LL, 512LL, 768LL}) {
      CAPTURE(count);
      CAPTURE(d);
      std::vector<float> raw = normal_values(rng, static_cast<std::size_t>(count * d));
      for (auto& v : raw) v *= 5.0f;
      const std::vector<float> cpu = cpu_normalized(raw, count, d);
      DeviceBuffer<float> rows(raw, gpu);
      DeviceBuffer<int> degenerate(1);
      cuda::check(cudaMemsetAsync(degenerate.get(), 0, sizeof(int), gpu.stream()), "cudaMemsetAsync");
      cuda::normalize_rows(rows.get(), count, d, gpu.stream(), degenerate.get());
      const std::vector<float> got = rows.download(gpu);
      CHECK(degenerate.download(gpu)[0] == 0);
      double worst_ulps = 0.0;
      for (std::size_t i = 0; i < got.size(); ++i) {
        const double ulp = 2.0 * kUnitRoundoff * std::abs(cpu[i]);
        worst_ulps = std::max(worst_ulps, std::abs(static_cast<double>(got[i]) - cpu[i]) / ulp);
      }
      CHECK(worst_ulps <= 1.0);
    }

  const long long count = 7, d = 5;
  std::vector<float> raw = normal_values(rng, count * d);
  for (long long j = 0; j < d; ++j) raw[static_cast<std::size_t>(2 * d + j)] = 0.0f;
  raw[4 * d + 3] = std::numeric_limits<float>::infinity();
  raw[5 * d + 0] = std::numeric_limits<float>::quiet_NaN();
  DeviceBuffer<float> rows(raw, gpu);
  DeviceBuffer<int> degenerate(1);
  cuda::check(cudaMemsetAsync(degenerate.get(), 0, sizeof(int), gpu.stream()), "cudaMemsetAsync");
  cuda::normalize_rows(rows.get(), count, d, gpu.stream(), degenerate.get());
  const std::vector<float> got = rows.download(gpu);
  CHECK(degenerate.download(gpu)[0] == 3);
  for (long long r = 0; r < count; ++r) {
    double sq = 0.0;
    bool all_nan = true;
    for (long long j = 0; j < d; ++j) {
      const float v = got[static_cast<std::size_t>(r * d + j)];
      sq += static_cast<double>(v) * v;
      all_nan = all_nan && std::isnan(v);
    }
    CAPTURE(r);
    if (r == 2 || r == 4 || r == 5)
      CHECK(all_nan);
    else
      CHECK(std::abs(sq - 1.0) < 1e-6);
  }
}

TEST_CASE("cuda memory search refuses bad sizes with a message (no GPU needed)") {
  float dummy[4] = {};
  float* p = dummy;
  using cuda::nearest_cosine_distances;
  CHECK_THROWS_WITH_AS(nearest_cosine_distances(nullptr, p, 0, p, 5, 3, p, p, 2, nullptr), doctest::Contains("no query rows"),
                       Error);
  CHECK_THROWS_WITH_AS(nearest_cosine_distances(nullptr, p, 7, p, 0, 3, p, p, 2, nullptr),
                       doctest::Contains("memory bank has no rows"), Error);
  CHECK_THROWS_WITH_AS(nearest_cosine_distances(nullptr, p, 7, p, 5, 0, p, p, 2, nullptr),
                       doctest::Contains("feature dimension must be positive"), Error);
  CHECK_THROWS_WITH_AS(nearest_cosine_distances(nullptr, p, 7, p, 5, 3, p, p, -1, nullptr),
                       doctest::Contains("block rows must be positive"), Error);
  CHECK_THROWS_WITH_AS(nearest_cosine_distances(nullptr, p, 7, p, 5, 1LL << 31, p, p, 2, nullptr),
                       doctest::Contains("exceeds cuBLAS's int sizes"), Error);
  CHECK_THROWS_WITH_AS(nearest_cosine_distances(nullptr, p, 7, p, 5, 3, p, p, 2, nullptr), doctest::Contains("handle is null"),
                       Error);
  CHECK_THROWS_WITH_AS(cuda::nearest_cosine_scratch_floats(0, 4096), doctest::Contains("query rows must be positive"), Error);
  CHECK_THROWS_WITH_AS(cuda::nearest_cosine_scratch_floats(1LL << 40, 1LL << 40), doctest::Contains("overflow"), Error);
  CHECK(cuda::nearest_cosine_scratch_floats(1369, 4096) == 1369u * 4096u);
  CHECK_THROWS_WITH_AS(cuda::normalize_rows(p, 0, 3, nullptr), doctest::Contains("no rows"), Error);
  CHECK_THROWS_WITH_AS(cuda::normalize_rows(p, 4, 0, nullptr), doctest::Contains("width must be positive"), Error);
  CHECK_THROWS_WITH_AS(cuda::normalize_rows(nullptr, 4, 3, nullptr), doctest::Contains("pointer is null"), Error);
}

// ---- maps ---------------------------------------------------------------------------------------

TEST_CASE("cuda upsample_bilinear equals the CPU's (PyTorch align_corners=False) for any ratio") {
  FOCUSPATCH_REQUIRE_GPU();
  const GpuContext gpu;
  std::mt19937 rng(5);
  struct Size {
    long long h, w;
  };
  const Size inputs[] = {{14, 14}, {16, 16}, {1, 1}, {3, 5}, {37, 37}};
  // Up, down (16 -> 7 rows) and unchanged axes (5 -> 5, 37 -> 37 columns are copied).
  const Size outputs[] = {{224, 224}, {7, 300}, {5, 10}, {518, 37}};
  for (const Size& in : inputs)
    for (const Size& out : outputs) {
      CAPTURE(in.h);
      CAPTURE(in.w);
      CAPTURE(out.h);
      CAPTURE(out.w);
      const std::vector<float> values = uniform_values(rng, static_cast<std::size_t>(in.h * in.w));
      const AnomalyMap cpu = upsample_bilinear(AnomalyMap(in.h, in.w, values), out.h, out.w);
      DeviceBuffer<float> din(values, gpu), dout(static_cast<std::size_t>(out.h * out.w));
      cuda::upsample_bilinear(din.get(), in.h, in.w, dout.get(), out.h, out.w, gpu.stream());
      check_maps_close(dout.download(gpu), cpu.values, max_abs(values));
    }

  // A batch: each map resampled on its own.
  const long long count = 3, h = 14, w = 14, oh = 224, ow = 224;
  const std::vector<float> values = uniform_values(rng, static_cast<std::size_t>(count * h * w));
  DeviceBuffer<float> din(values, gpu), dout(static_cast<std::size_t>(count * oh * ow));
  cuda::upsample_bilinear_batch(din.get(), count, h, w, dout.get(), oh, ow, gpu.stream());
  const std::vector<float> got = dout.download(gpu);
  for (long long m = 0; m < count; ++m) {
    CAPTURE(m);
    const std::vector<float> one(values.begin() + m * h * w, values.begin() + (m + 1) * h * w);
    const AnomalyMap cpu = upsample_bilinear(AnomalyMap(h, w, one), oh, ow);
    check_maps_close(std::vector<float>(got.begin() + m * oh * ow, got.begin() + (m + 1) * oh * ow), cpu.values, max_abs(one));
  }
}

TEST_CASE("cuda gaussian_smooth equals the CPU's (scipy reflect), kernels wider than the map included") {
  FOCUSPATCH_REQUIRE_GPU();
  const GpuContext gpu;
  std::mt19937 rng(9);
  struct Case {
    long long h, w;
    double sigma, truncate;
  };
  // sigma 4: radius 16, beyond a 5x3 or 1x7 map, so lines are reflected several times over.
  const Case cases[] = {{224, 224, 4.0, 4.0}, {224, 224, 0.5, 4.0}, {5, 3, 4.0, 4.0}, {5, 3, 0.5, 4.0},
                        {1, 7, 4.0, 4.0},     {1, 1, 4.0, 4.0},     {37, 20, 2.0, 2.5}};
  SUBCASE("random maps, out of place and in place") {
    for (const Case& c : cases) {
      CAPTURE(c.h);
      CAPTURE(c.w);
      CAPTURE(c.sigma);
      CAPTURE(c.truncate);
      const std::vector<float> values = uniform_values(rng, static_cast<std::size_t>(c.h * c.w));
      const AnomalyMap cpu = gaussian_smooth(AnomalyMap(c.h, c.w, values), c.sigma, c.truncate);
      DeviceBuffer<float> din(values, gpu), dout(values.size()), scratch(values.size());
      cuda::gaussian_smooth(din.get(), c.h, c.w, c.sigma, c.truncate, dout.get(), scratch.get(), gpu.stream());
      check_maps_close(dout.download(gpu), cpu.values, max_abs(values));
      cuda::gaussian_smooth(din.get(), c.h, c.w, c.sigma, c.truncate, din.get(), scratch.get(), gpu.stream());
      check_maps_close(din.download(gpu), cpu.values, max_abs(values));
    }
  }

  SUBCASE("a constant map stays constant (the weights sum to 1)") {
    const std::vector<float> constant(15, 0.75f);
    DeviceBuffer<float> din(constant, gpu), dout(15), scratch(15);
    cuda::gaussian_smooth(din.get(), 5, 3, 4.0, 4.0, dout.get(), scratch.get(), gpu.stream());
    for (const float v : dout.download(gpu)) CHECK(std::abs(v - 0.75) <= 8.0 * kUnitRoundoff);
  }
  SUBCASE("sigma 0 copies the map") {
    const std::vector<float> values = uniform_values(rng, 15);
    DeviceBuffer<float> din(values, gpu), dout(15), scratch(15);
    cuda::gaussian_smooth(din.get(), 5, 3, 0.0, 4.0, dout.get(), scratch.get(), gpu.stream());
    CHECK(dout.download(gpu) == values);
  }
  SUBCASE("a batch smooths each map on its own") {
    const long long count = 3, h = 5, w = 3;
    const std::vector<float> values = uniform_values(rng, static_cast<std::size_t>(count * h * w));
    DeviceBuffer<float> din(values, gpu), dout(values.size()), scratch(values.size());
    cuda::gaussian_smooth_batch(din.get(), count, h, w, 4.0, 4.0, dout.get(), scratch.get(), gpu.stream());
    const std::vector<float> got = dout.download(gpu);
    for (long long m = 0; m < count; ++m) {
      CAPTURE(m);
      const std::vector<float> one(values.begin() + m * h * w, values.begin() + (m + 1) * h * w);
      const AnomalyMap cpu = gaussian_smooth(AnomalyMap(h, w, one), 4.0);
      check_maps_close(std::vector<float>(got.begin() + m * h * w, got.begin() + (m + 1) * h * w), cpu.values, max_abs(one));
    }
  }
}

TEST_CASE("cuda anomaly maps refuse bad sizes and parameters with a message (no GPU needed)") {
  float dummy[4] = {};
  float* p = dummy;
  float* q = dummy + 1;
  float* s = dummy + 2;
  CHECK_THROWS_WITH_AS(cuda::upsample_bilinear(p, 0, 14, q, 224, 224, nullptr), doctest::Contains("input size 0x14 is empty"),
                       Error);
  CHECK_THROWS_WITH_AS(cuda::upsample_bilinear(p, 14, 14, q, 224, 0, nullptr), doctest::Contains("output size 224x0 is empty"),
                       Error);
  CHECK_THROWS_WITH_AS(cuda::upsample_bilinear_batch(p, 0, 14, 14, q, 224, 224, nullptr), doctest::Contains("no maps"), Error);
  CHECK_THROWS_WITH_AS(cuda::upsample_bilinear(nullptr, 14, 14, q, 224, 224, nullptr), doctest::Contains("pointer is null"),
                       Error);
  CHECK_THROWS_WITH_AS(cuda::upsample_bilinear_batch(p, 1LL << 40, 1LL << 20, 1LL << 20, q, 1, 1, nullptr),
                       doctest::Contains("overflow"), Error);
  // A 5x3 map from p into q through s, or as given.
  const auto smooth = [&](long long w, double sigma, double truncate, float* scratch) {
    cuda::gaussian_smooth(p, 5, w, sigma, truncate, q, scratch, nullptr);
  };
  CHECK_THROWS_WITH_AS(smooth(0, 4.0, 4.0, s), doctest::Contains("map size 5x0 is empty"), Error);
  CHECK_THROWS_WITH_AS(smooth(3, -1.0, 4.0, s), doctest::Contains("sigma must be"), Error);
  CHECK_THROWS_WITH_AS(smooth(3, std::nan(""), 4.0, s), doctest::Contains("sigma must be"), Error);
  CHECK_THROWS_WITH_AS(smooth(3, 4.0, 0.0, s), doctest::Contains("truncate must be"), Error);
  // Radius int(4 * 100.1 + 0.5) = 400 is the largest taken; 401 and an absurd sigma are refused.
  CHECK_THROWS_WITH_AS(smooth(3, 100.2, 4.0, s), doctest::Contains("kernel radius above the 400"), Error);
  CHECK_THROWS_WITH_AS(smooth(3, 1e300, 4.0, s), doctest::Contains("kernel radius"), Error);
  CHECK_THROWS_WITH_AS(smooth(3, 4.0, 4.0, nullptr), doctest::Contains("scratch pointer is null"), Error);
  CHECK_THROWS_WITH_AS(smooth(3, 4.0, 4.0, p), doctest::Contains("buffer of its own"), Error);
  CHECK(gaussian_radius(100.1, 4.0) <= cuda::kMaxGaussianRadius);
  CHECK(gaussian_radius(100.2, 4.0) > cuda::kMaxGaussianRadius);
}
