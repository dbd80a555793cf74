#pragma once
// What this CPU can do at best, measured rather than taken from a data sheet, so every benchmark
// can say how far it is from the machine's limit (the data sheet does not know how many cores this
// VM really gets, nor its clock under load).
//
// Method.
//  * fp32 FMA peak: every thread runs kChains independent chains acc = fma(acc, mul, add), each
//    chain one vector register wide (kLanes floats: 16 with AVX-512, 8 with AVX, 4 otherwise). The
//    chains are independent so the FMA units never wait on a result: their count covers the FMA
//    latency times the number of FMA pipes (4 cycles x 2 pipes on current x86 cores) and still fits
//    the register file. The chains are GCC/Clang vector-extension values, so with -march=native the
//    compiler keeps each in one register and turns each step into one vfmadd (AVX-512 on Zen 4).
//    2 FLOP per lane per FMA. The threads are OpenMP's (the same pool Eigen and the CPU backend
//    use), as many as omp_get_max_threads(), i.e. OMP_NUM_THREADS. Best of 5 runs of ~50 ms.
//  * bf16 dot-product peak (AVX512-BF16 builds): the same independent chains with vdpbf16ps,
//    acc = acc + a[2i] b[2i] + a[2i+1] b[2i+1] per fp32 lane: 4 FLOP per lane per instruction, 64 per
//    zmm. What the bf16 linear layers are measured against (Zen 4 runs it at the fp32 FMA's
//    instruction rate, so twice its FLOP/s).
//  * AMX bf16 peak (where cpuid says AMX and Linux granted the tile data): every thread keeps four
//    independent C tiles, tdpbf16ps into each from two A and two B tiles (16 x 16 x 32 multiply-adds,
//    16384 FLOP per instruction), the operands' pairs cancelling so the sums stay finite. What the
//    AMX linear layers and attention are measured against: 6.1-7.5 TFLOP/s on 2 threads of a Xeon
//    with AMX; 0 (reported as such) wherever AMX is absent.
//  * Memory bandwidth: STREAM's copy (a = b) and triad (a = b + s * c) over arrays of 64 MiB each,
//    far beyond any last-level cache, split statically across the same threads (first-touch
//    initialised by the thread that later streams them). Bytes counted as STREAM does: 2 or 3
//    arrays per pass, write-allocate traffic not counted. Best of several passes.
// Peaks are measured once per process, on first use, and printed in the benchmark context.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512BF16__)
#include <immintrin.h>
#endif

#include "focuspatch/backend/cpu/amx_tiles.hpp"
#include "focuspatch/backend/cpu/attention.hpp"
#include "focuspatch/backend/cpu/gemm.hpp"
#include "focuspatch/backend/cpu/isa.hpp"

namespace focuspatch::bench {

#if defined(__AVX512F__)
inline constexpr int kLanes = 16;
inline constexpr int kChains = 12;  // 12 of 32 zmm registers
#elif defined(__AVX__)
inline constexpr int kLanes = 8;
inline constexpr int kChains = 10;  // 10 of 16 ymm registers, leaving room for mul and add
#else
inline constexpr int kLanes = 4;
inline constexpr int kChains = 10;
#endif

inline int bench_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace detail {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// One vector register of floats. GCC and Clang both vectorise arithmetic on this type to the
// widest unit -march enables, and both contract `a * b + c` on it into one FMA (GCC's C++ default
// is -ffp-contract=fast, Clang's is "on", i.e. within one expression). Plain float arrays are not
// reliable here: GCC 12 keeps them in memory or shuffles them and measures something else.
using Vector = float __attribute__((vector_size(kLanes * sizeof(float))));

// One thread's FMA stream: 2 * kChains * kLanes FLOP per iteration. Returns a value depending on
// every chain so that none can be optimised away.
inline float fma_chains(std::int64_t iterations, float seed, float mul, float add) {
  Vector acc[kChains];
  const Vector m = Vector{} + mul, a = Vector{} + add;
  for (int c = 0; c < kChains; ++c)
    for (int l = 0; l < kLanes; ++l) acc[c][l] = seed + 0.001f * static_cast<float>(c * kLanes + l);
  for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * m + a;
  }
  float sum = 0.0f;
  for (int c = 0; c < kChains; ++c)
    for (int l = 0; l < kLanes; ++l) sum += acc[c][l];
  return sum;
}

// FLOP per second of `threads` threads each running fma_chains(iterations).
inline double fma_rate(int threads, std::int64_t iterations) {
  // Read through volatile so the compiler cannot fold the chains into a closed form.
  volatile float mul_source = 0.9999999f, add_source = 1e-7f;
  const float mul = mul_source, add = add_source;
  float sink = 0.0f;
  const auto start = std::chrono::steady_clock::now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  sink += fma_chains(iterations, 1.0f + 0.01f * static_cast<float>(omp_get_thread_num()), mul, add);
#else
  sink = fma_chains(iterations, 1.0f, mul, add);
#endif
  const double seconds = seconds_since(start);
  benchmark::DoNotOptimize(sink);
  return 2.0 * kChains * kLanes * static_cast<double>(iterations) * threads / seconds;
}

#if defined(__AVX512BF16__)
// One thread's vdpbf16ps stream: 4 * 16 * kChains FLOP per iteration.
inline float bf16_chains(std::int64_t iterations, float seed, float scale) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed + 0.001f * static_cast<float>(c));
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(scale), _mm512_set1_ps(scale));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(-scale), _mm512_set1_ps(scale));  // pairs cancel: acc stays finite
  for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  }
  alignas(64) float lanes[16];  // (not _mm512_reduce_add_ps: GCC 12 warns inside it)
  float sum = 0.0f;
  for (int c = 0; c < kChains; ++c) {
    _mm512_store_ps(lanes, acc[c]);
    for (float v : lanes) sum += v;
  }
  return sum;
}

inline double bf16_rate(int threads, std::int64_t iterations) {
  volatile float scale_source = 0.5f;
  const float scale = scale_source;
  float sink = 0.0f;
  const auto start = std::chrono::steady_clock::now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  sink += bf16_chains(iterations, 1.0f + 0.01f * static_cast<float>(omp_get_thread_num()), scale);
#else
  sink = bf16_chains(iterations, 1.0f, scale);
#endif
  const double seconds = seconds_since(start);
  benchmark::DoNotOptimize(sink);
  return 4.0 * 16 * kChains * static_cast<double>(iterations) * threads / seconds;
}
#endif

#if defined(FOCUSPATCH_HAVE_AMX_TILES)
// One thread's tdpbf16ps stream: 4 x 16384 FLOP per iteration. A holds pairs (1, 1), B pairs
// (0.5, -0.5): every product pair cancels. Needs cpu_features().amx.
inline float amx_chains(std::int64_t iterations) {
  using Tiles = focuspatch::AmxTiles;
  alignas(64) std::uint16_t a[16 * 32], b[16 * 32];
  for (int i = 0; i < 16 * 32; ++i) {
    a[i] = 0x3f80;                               // 1.0
    b[i] = static_cast<std::uint16_t>(i % 2 ? 0xbf00 : 0x3f00);  // -0.5, 0.5
  }
  Tiles::configure(focuspatch::full_amx_tiles());
  Tiles::load<4>(a, 64);
  Tiles::load<5>(a, 64);
  Tiles::load<6>(b, 64);
  Tiles::load<7>(b, 64);
  Tiles::zero<0>();
  Tiles::zero<1>();
  Tiles::zero<2>();
  Tiles::zero<3>();
  for (std::int64_t i = 0; i < iterations; ++i) {
    Tiles::dot_bf16<0, 4, 6>();
    Tiles::dot_bf16<1, 4, 7>();
    Tiles::dot_bf16<2, 5, 6>();
    Tiles::dot_bf16<3, 5, 7>();
  }
  alignas(64) float c[16 * 16];
  Tiles::store<0>(c, 64);
  return c[0];
}

inline double amx_rate(int threads, std::int64_t iterations) {
  float sink = 0.0f;
  const auto start = std::chrono::steady_clock::now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  sink += amx_chains(iterations);
#else
  sink = amx_chains(iterations);
#endif
  const double seconds = seconds_since(start);
  benchmark::DoNotOptimize(sink);
  return 4.0 * 16384.0 * static_cast<double>(iterations) * threads / seconds;
}
#endif

struct FloatArray {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  explicit FloatArray(std::size_t n) : data(static_cast<float*>(std::aligned_alloc(64, n * sizeof(float)))) {
    if (!data) throw std::bad_alloc();
  }
  std::unique_ptr<float[], Free> data;
};

}  // namespace detail

// The best of 5 runs of rate(threads, iterations), iterations calibrated to ~50 ms a run.
template <class Rate>
inline double measure_best_rate(int threads, std::int64_t iterations, Rate rate) {
  while (true) {
    const auto start = std::chrono::steady_clock::now();
    rate(threads, iterations);
    if (detail::seconds_since(start) > 0.02) break;
    iterations *= 2;
  }
  iterations = iterations * 5 / 2;
  double best = 0.0;
  for (int run = 0; run < 5; ++run) best = std::max(best, rate(threads, iterations));
  return best;
}

// Peak fp32 FLOP/s of `threads` threads.
inline double measure_fma_peak(int threads) { return measure_best_rate(threads, 1 << 16, detail::fma_rate); }

// Peak bf16 dot-product FLOP/s of `threads` threads; 0 where the build has no AVX512-BF16.
inline double measure_bf16_peak(int threads) {
#if defined(__AVX512BF16__)
  return measure_best_rate(threads, 1 << 16, detail::bf16_rate);
#else
  (void)threads;
  return 0.0;
#endif
}

// Peak AMX bf16 FLOP/s of `threads` threads; 0 where the CPU (or the OS) gives no AMX.
inline double measure_amx_peak(int threads) {
#if defined(FOCUSPATCH_HAVE_AMX_TILES)
  if (!focuspatch::cpu_features().amx) return 0.0;
  return measure_best_rate(threads, 1 << 12, detail::amx_rate);
#else
  (void)threads;
  return 0.0;
#endif
}

struct Bandwidth {
  double copy = 0.0, triad = 0.0;  // bytes per second
};

inline Bandwidth measure_memory_bandwidth(int threads, std::size_t floats = std::size_t{16} << 20) {
  detail::FloatArray a(floats), b(floats), c(floats);
  float* pa = a.data.get();
  float* pb = b.data.get();
  float* pc = c.data.get();
  const auto n = static_cast<std::int64_t>(floats);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t i = 0; i < n; ++i) {
    pa[i] = 0.0f;
    pb[i] = 1.0f;
    pc[i] = 2.0f;
  }
  volatile float scale_source = 3.0f;
  const float scale = scale_source;
  Bandwidth best;
  for (int pass = 0; pass < 5; ++pass) {
    auto start = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static) num_threads(threads)
    for (std::int64_t i = 0; i < n; ++i) pa[i] = pb[i];
    benchmark::ClobberMemory();
    best.copy = std::max(best.copy, 2.0 * sizeof(float) * static_cast<double>(n) / detail::seconds_since(start));
    start = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static) num_threads(threads)
    for (std::int64_t i = 0; i < n; ++i) pa[i] = pb[i] + scale * pc[i];
    benchmark::ClobberMemory();
    best.triad = std::max(best.triad, 3.0 * sizeof(float) * static_cast<double>(n) / detail::seconds_since(start));
  }
  benchmark::DoNotOptimize(pa[n / 2]);
  return best;
}

struct MachinePeak {
  int threads = 1;
  double flops = 0.0;             // fp32 FLOP/s, all threads
  double flops_one_thread = 0.0;  // fp32 FLOP/s, one thread
  double bf16_flops = 0.0;        // bf16 dot-product FLOP/s, all threads (0: not measurable here)
  double amx_flops = 0.0;         // AMX bf16 FLOP/s, all threads (0: no AMX here)
  Bandwidth memory;               // bytes/s, all threads
};

// Measured on first call, then cached for the whole process.
inline const MachinePeak& machine_peak() {
  static const MachinePeak peak = [] {
    MachinePeak p;
    p.threads = bench_threads();
    p.flops = measure_fma_peak(p.threads);
    p.flops_one_thread = p.threads == 1 ? p.flops : measure_fma_peak(1);
    p.bf16_flops = measure_bf16_peak(p.threads);
    p.amx_flops = measure_amx_peak(p.threads);
    p.memory = measure_memory_bandwidth(p.threads);
    return p;
  }();
  return peak;
}

// Adds the measured peaks to the context block printed before the results (and to JSON output).
inline void add_peak_context() {
  const MachinePeak& p = machine_peak();
  auto fixed = [](double v) { return std::to_string(static_cast<long long>(std::llround(v))); };
  benchmark::AddCustomContext("threads", std::to_string(p.threads));
  benchmark::AddCustomContext("fp32_fma_peak_GFLOPs", fixed(p.flops * 1e-9));
  benchmark::AddCustomContext("fp32_fma_peak_one_thread_GFLOPs", fixed(p.flops_one_thread * 1e-9));
  benchmark::AddCustomContext("bf16_dot_peak_GFLOPs", fixed(p.bf16_flops * 1e-9));
  benchmark::AddCustomContext("amx_bf16_peak_GFLOPs", fixed(p.amx_flops * 1e-9));
  benchmark::AddCustomContext("stream_copy_GBs", fixed(p.memory.copy * 1e-9));
  benchmark::AddCustomContext("stream_triad_GBs", fixed(p.memory.triad * 1e-9));
  benchmark::AddCustomContext("simd_lanes_x_chains", std::to_string(kLanes) + " x " + std::to_string(kChains));
}

// Which measured peak a benchmark's work ran against.
enum class Peak { Fp32Fma, Bf16Dot, AmxBf16 };

inline Peak peak_of(focuspatch::CpuLinearPath path) {
  return path == focuspatch::CpuLinearPath::Bf16Amx ? Peak::AmxBf16 : path == focuspatch::CpuLinearPath::Bf16Avx512 ? Peak::Bf16Dot : Peak::Fp32Fma;
}
inline Peak peak_of(focuspatch::CpuAttentionPath path) {
  return path == focuspatch::CpuAttentionPath::Bf16Amx ? Peak::AmxBf16 : path == focuspatch::CpuAttentionPath::Bf16Avx512 ? Peak::Bf16Dot : Peak::Fp32Fma;
}

// Counters for work of `flops` FLOP per iteration: FLOP/s and the percentage of the measured peak
// of the path that ran (fp32 FMA, bf16 dot products, AMX tiles). Both are rates, so they are divided
// by the benchmark's time; register the benchmark with UseRealTime(), as with several threads the
// default (CPU time of all threads) would undercount.
inline void report_flops(benchmark::State& state, double flops, Peak kind = Peak::Fp32Fma) {
  state.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  const MachinePeak& p = machine_peak();
  const double peak = kind == Peak::AmxBf16 && p.amx_flops > 0 ? p.amx_flops : kind != Peak::Fp32Fma && p.bf16_flops > 0 ? p.bf16_flops : p.flops;
  state.counters["%peak"] = benchmark::Counter(100.0 * flops / peak, benchmark::Counter::kIsIterationInvariantRate);
}

// Counters for `bytes` of memory traffic per iteration, against the measured triad bandwidth.
inline void report_bytes(benchmark::State& state, double bytes) {
  state.counters["bytes/s"] = benchmark::Counter(bytes, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["%triad"] =
      benchmark::Counter(100.0 * bytes / machine_peak().memory.triad, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace focuspatch::bench
