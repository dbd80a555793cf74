// Attention with bf16 products (backend/cpu/attention_bf16_avx512.hpp on vdpbf16ps,
// attention_bf16_amx.hpp on AMX tiles and on their software model, amx_tiles_reference.hpp) against
//  * the double-precision definition (attention_reference.hpp) and the fp32 kernel, every element
//    within a worst-case bound derived below from bf16's rounding;
//  * the same reference with q, k, v and the probabilities rounded to bf16 as the kernel rounds
//    them: only fp32 arithmetic separates the two, so the kernel must sit far closer to it than
//    bf16 rounding moves anything (a rounding mode or a pairing wrong would not);
// on awkward shapes (sequence 1, 2, 50, 197, 257; head dims 1, 16, 33, 64, 80; causal or not;
// value-value), 1 and 2 threads; and the dispatch: a bf16 CpuBackend takes the AMX path where the
// CPU has AMX, else the vdpbf16ps one where it has AVX512-BF16, and an ISA ceiling of avx512 gives
// the fp32 attention bit for bit. A kernel this CPU cannot run is skipped, naming the missing flag
// (the AMX kernel on the tile model needs only avx512_bf16).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "focuspatch/backend/cpu.hpp"
#include "focuspatch/backend/cpu/amx_tiles_reference.hpp"
#include "focuspatch/backend/cpu/attention.hpp"
#include "focuspatch/backend/cpu/attention_reference.hpp"
#include "bf16_kernels_support.hpp"
#include "test_paths.hpp"

using namespace focuspatch;

namespace {

// Deterministic values in [-amplitude, amplitude).
std::vector<float> filled(std::size_t count, float amplitude, std::uint64_t seed) {
  std::vector<float> values(count);
  std::uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : values) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    v = amplitude * static_cast<float>(static_cast<double>(state >> 40) / 8388608.0 - 1.0);
  }
  return values;
}

struct Case {
  std::int64_t batch, seq;
  int heads, dim;
  bool causal;
  AttentionKind kind;
};

std::string describe(const Case& c, int threads) {
  return "batch " + std::to_string(c.batch) + " seq " + std::to_string(c.seq) + " heads " + std::to_string(c.heads) + " dim " +
         std::to_string(c.dim) + (c.causal ? " causal" : "") + (c.kind == AttentionKind::ValueValue ? " value-value" : "") + ", " +
         std::to_string(threads) + " thread(s)";
}

using Kernel = test::Bf16Kernel;
using test::can_run;
using test::kernel_name;
constexpr auto& kKernels = test::kBf16Kernels;

bool can_run_bf16() { return can_run(Kernel::Avx512); }

void run_kernel(Kernel kernel, const float* qkv, const auto& c, float* out) {
  if (kernel == Kernel::AmxOnModel) {
#if defined(__AVX512F__) && defined(FOCUSPATCH_HAVE_AMX_TILES)
    return cpu_attention_bf16_amx<AmxTilesReference>(qkv, c.batch, c.seq, c.heads, c.dim, c.causal, out, c.kind);
#else
    FAIL("the AMX attention kernel is not compiled into this build");
#endif
  }
  cpu_attention(qkv, c.batch, c.seq, c.heads, c.dim, c.causal, out, c.kind,
                kernel == Kernel::Amx ? CpuAttentionPath::Bf16Amx : CpuAttentionPath::Bf16Avx512);
}

double rms(const std::vector<double>& a, const std::vector<double>& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(sum / static_cast<double>(std::max<std::size_t>(a.size(), 1)));
}

// Runs a bf16 kernel on one case and checks it.
void check_case(Kernel kernel, const Case& c, int threads) {
  INFO(kernel_name(kernel) << ", " << describe(c, threads));
  const std::int64_t width = std::int64_t{c.heads} * c.dim, stride = 3 * width, rows = c.batch * c.seq;
  // Amplitude 2: scores of standard deviation ~1.5 after the 1/sqrt(d) scale, so softmax rows
  // range from nearly flat to peaked, and the rounding of q and k matters.
  const std::vector<float> qkv = filled(static_cast<std::size_t>(rows * stride), 2.0f, static_cast<std::uint64_t>(c.seq * 131 + c.dim));
  std::vector<float> got(static_cast<std::size_t>(rows * width), -7.0f), fp32(got.size(), -7.0f);
  test::set_threads(threads);
  run_kernel(kernel, qkv.data(), c, got.data());
  cpu_attention(qkv.data(), c.batch, c.seq, c.heads, c.dim, c.causal, fp32.data(), c.kind, CpuAttentionPath::F32);
  test::set_threads(2);
  const std::vector<double> exact = attention_reference(qkv.data(), c.batch, c.seq, c.heads, c.dim, c.causal, c.kind, false);
  const std::vector<double> rounded = attention_reference(qkv.data(), c.batch, c.seq, c.heads, c.dim, c.causal, c.kind, true);

  // The worst-case bound, per output element (row i, column c of a head), with u = 2^-9 the
  // relative rounding error of bf16 and A_ij = sum_d |q_id k_jd| over the head:
  //  * each score q.k moves by at most (2u + u^2 + d 2^-24) A_ij (both operands rounded, fp32
  //    sums), and the fp32 exponent argument by 2^-22 of |s| more; times the 1/sqrt(d) scale that
  //    is D_i at most, and every softmax weight w_j moves by a factor within e^(+-2 D_i);
  //  * then p and v are each rounded (relative u each), and P V sums `keys` fp32 terms, the
  //    denominator as many, and 1/sum and the product round once each.
  // With M the largest |v_jc| over the row's keys, |out - exact| <= M [(e^(2D) - 1)
  // + (2u + u^2) e^(2D) + 2 keys 2^-24 + 2^-21]. Against the fp32 kernel add its own error (1e-5 M).
  constexpr double u = 0x1p-9;
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
  const bool vv = c.kind == AttentionKind::ValueValue;
  int failures = 0;
  for (std::int64_t b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.heads; ++h) {
      const float* base = qkv.data() + b * c.seq * stride;
      const std::int64_t q_col = (vv ? 2 * width : 0) + h * c.dim, k_col = (vv ? 2 * width : width) + h * c.dim,
                         v_col = 2 * width + h * c.dim;
      for (std::int64_t i = 0; i < c.seq; ++i) {
        const std::int64_t keys = c.causal ? i + 1 : c.seq;
        double d_max = 0;
        for (std::int64_t j = 0; j < keys; ++j) {
          double magnitude = 0, dot = 0;
          for (int d = 0; d < c.dim; ++d) {
            const double product = double{base[i * stride + q_col + d]} * base[j * stride + k_col + d];
            magnitude += std::fabs(product);
            dot += product;
          }
          d_max = std::max(d_max, scale * ((2 * u + u * u + c.dim * 0x1p-24) * magnitude + 0x1p-22 * std::fabs(dot)));
        }
        const double growth = std::exp(2 * d_max);
        const double relative = (growth - 1) + (2 * u + u * u) * growth + 2.0 * static_cast<double>(keys) * 0x1p-24 + 0x1p-21;
        for (int col = 0; col < c.dim; ++col) {
          double m = 0;
          for (std::int64_t j = 0; j < keys; ++j) m = std::max(m, std::fabs(double{base[j * stride + v_col + col]}));
          const auto at = static_cast<std::size_t>((b * c.seq + i) * width + h * c.dim + col);
          const double bound = 1.001 * m * relative + 1e-30;
          const bool ok = std::fabs(got[at] - exact[at]) <= bound && std::fabs(got[at] - fp32[at]) <= bound + 1e-5 * m;
          if (!ok && failures++ < 5)
            FAIL_CHECK("out[" << (b * c.seq + i) << "][" << (h * c.dim + col) << "] = " << got[at] << ", exact " << exact[at]
                              << ", fp32 kernel " << fp32[at] << ", bound " << bound);
        }
      }
    }
  CHECK(failures == 0);

  // Against the bf16-rounded reference: the kernel rounds the same operands the same way, so what
  // is left is fp32 summation and the rare probability whose fp32 value rounds to the other bf16
  // neighbour than its double value: an order of magnitude below the rounding itself.
  std::vector<double> got_d(got.begin(), got.end());
  const double kernel_to_rounded = rms(got_d, rounded), rounding_effect = rms(rounded, exact);
  const double magnitude = rms(exact, std::vector<double>(exact.size(), 0.0));
  INFO("rms(kernel - bf16 reference) " << kernel_to_rounded << ", rms(bf16 reference - exact) " << rounding_effect);
  CHECK(kernel_to_rounded <= 0.1 * rounding_effect + 1e-7 * magnitude);
}

const Case kShapes[] = {
    {1, 1, 2, 64, false, AttentionKind::QueryKey},   {1, 2, 2, 33, true, AttentionKind::QueryKey},
    {2, 50, 3, 16, false, AttentionKind::QueryKey},  {1, 197, 2, 64, false, AttentionKind::QueryKey},
    {1, 257, 2, 80, true, AttentionKind::QueryKey},  {1, 197, 2, 80, false, AttentionKind::ValueValue},
    {1, 50, 2, 1, false, AttentionKind::QueryKey},   {1, 257, 1, 33, false, AttentionKind::ValueValue},
};

}  // namespace

TEST_CASE("bf16 attention stays within bf16's bound of the double definition and the fp32 kernel over awkward shapes") {
  for (const Kernel kernel : kKernels) {
    if (!can_run(kernel)) continue;
    for (const std::int64_t seq : {1, 2, 50, 197, 257})
      for (const int dim : {1, 16, 33, 64, 80})
        for (const bool causal : {false, true})
          for (const AttentionKind kind : {AttentionKind::QueryKey, AttentionKind::ValueValue})
            check_case(kernel, {1, seq, 2, dim, causal, kind}, 2);
  }
}

TEST_CASE("bf16 attention: several heads and batches, one and two threads") {
  for (const Kernel kernel : kKernels) {
    if (!can_run(kernel)) continue;
    for (const Case& c : kShapes)
      for (const int threads : {1, 2}) check_case(kernel, c, threads);
  }
}

TEST_CASE("a bf16 CpuBackend runs attention in bf16 where the CPU can; the avx512 ceiling gives fp32 exactly") {
  const Case c{2, 197, 3, 64, false, AttentionKind::QueryKey};
  const std::int64_t width = std::int64_t{c.heads} * c.dim, rows = c.batch * c.seq;
  const std::vector<float> qkv = filled(static_cast<std::size_t>(rows * 3 * width), 2.0f, 5);
  std::vector<float> f32(static_cast<std::size_t>(rows * width)), capped(f32.size()), bf16(f32.size()), direct(f32.size());
  cpu_attention_f32(qkv.data(), c.batch, c.seq, c.heads, c.dim, c.causal, f32.data(), c.kind);

  const CpuBackend capped_backend(CpuOptions{CpuPrecision::BF16, CpuIsa::Avx512});
  CHECK(capped_backend.attention_path() == CpuAttentionPath::F32);
  capped_backend.attention(qkv.data(), c.batch, c.seq, c.heads, c.dim, c.causal, capped.data(), c.kind);
  CHECK(capped == f32);
  CHECK(CpuBackend(CpuOptions{CpuPrecision::F32}).attention_path() == CpuAttentionPath::F32);

  const CpuBackend backend(CpuOptions{CpuPrecision::BF16});
  if (!can_run_bf16()) {
    CHECK(backend.attention_path() == CpuAttentionPath::F32);
    return;
  }
  if (cpu_isa() < CpuIsa::Avx512Bf16) {
    MESSAGE("skipped the bf16 backend check: FOCUSPATCH_CPU_ISA caps this process at " << std::string(cpu_isa_name(cpu_isa())));
    CHECK(backend.attention_path() == CpuAttentionPath::F32);
    return;
  }
  const CpuAttentionPath expected = cpu_isa() >= CpuIsa::Amx ? CpuAttentionPath::Bf16Amx : CpuAttentionPath::Bf16Avx512;
  CHECK(backend.attention_path() == expected);
  backend.attention(qkv.data(), c.batch, c.seq, c.heads, c.dim, c.causal, bf16.data(), c.kind);
  cpu_attention(qkv.data(), c.batch, c.seq, c.heads, c.dim, c.causal, direct.data(), c.kind, expected);
  CHECK(bf16 == direct);
  CHECK(bf16 != f32);  // the products really ran in bf16
}
