// The CPU backend's bf16 path: instruction-set choice (backend/cpu/isa.hpp), the weights packed at
// load (gemm_bf16_packed.hpp), the software model of the AMX tiles (amx_tiles_reference.hpp), and
// each bf16 GEMM kernel (vdpbf16ps; AMX on the hardware tiles and on their model) against
//  * the double-precision reference with the operands rounded to bf16 as the kernels round them
//    (gemm_reference.hpp): only fp32 summation error may remain, so the bound is tight;
//  * the same reference with unrounded fp32 operands, and the fp32 kernel: the bound is the bf16
//    rounding of both operands, 2^-8 of sum |a w|;
// on awkward shapes (batch 1, ragged row and column edges, K odd, K not a multiple of 32, K over
// one K block), every epilogue, with and without bias and residual accumulation, 1 and 2 threads.
// A path this CPU lacks is skipped with a message naming the missing /proc/cpuinfo flag; the AMX
// kernel on the tile model needs only avx512_bf16, so it runs wherever vdpbf16ps does.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "focuspatch/backend/cpu.hpp"
#include "focuspatch/backend/cpu/amx_tiles_reference.hpp"
#include "focuspatch/backend/cpu/gemm.hpp"
#include "focuspatch/backend/cpu/gemm_reference.hpp"
#include "focuspatch/backend/cpu/isa.hpp"
#include "focuspatch/core/half.hpp"
#include "bf16_kernels_support.hpp"
#include "test_paths.hpp"

using namespace focuspatch;

namespace {

struct Rng {
  std::uint64_t state;
  float uniform() {  // [-1, 1)
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>(static_cast<double>(state >> 40) / 8388608.0 - 1.0);
  }
};

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

using test::Bf16Kernel;
using test::can_run;
using test::kBf16Kernels;
using test::kernel_name;

void run_kernel(Bf16Kernel kernel, const float* a, std::int64_t lda, std::int64_t m, const PackedBf16Matrix& w, const float* bias, float* c,
                std::int64_t ldc, Epilogue epilogue, bool accumulate) {
  if (kernel == Bf16Kernel::AmxOnModel) {
#if defined(FOCUSPATCH_HAVE_AMX_KERNEL)
    return gemm_bf16_amx<AmxTilesReference>(a, lda, m, w, bias, c, ldc, epilogue, accumulate);
#else
    FAIL("the AMX kernel is not compiled into this build");
#endif
  }
  gemm_linear_bf16(a, lda, m, w, bias, c, ldc, epilogue, accumulate, kernel == Bf16Kernel::Amx ? CpuLinearPath::Bf16Amx : CpuLinearPath::Bf16Avx512);
}

struct Case {
  std::int64_t m, n, k;
  Epilogue epilogue = Epilogue::None;
  bool accumulate = false, bias = true;
  DType dtype = DType::F32;
};

std::string describe(const Case& c, Bf16Kernel kernel, int threads) {
  return kernel_name(kernel) + " " + std::to_string(c.m) + "x" + std::to_string(c.k) + "->" + std::to_string(c.n) +
         " " + std::string(dtype_name(c.dtype)) + " epilogue " + std::to_string(static_cast<int>(c.epilogue)) + (c.accumulate ? " accumulate" : "") +
         (c.bias ? " bias" : "") + " threads " + std::to_string(threads);
}

// Runs one case with strided A and C through the kernel and checks every element against
// both references, and that C's padding is untouched.
void check_case(const Case& c, Bf16Kernel kernel, int threads, std::uint64_t seed) {
  CAPTURE(describe(c, kernel, threads));
  Rng rng{seed};
  const std::int64_t lda = c.k + 3, ldc = c.n + 5;
  std::vector<float> a(static_cast<std::size_t>(c.m * lda + 1));
  for (float& v : a) v = rng.uniform();
  std::vector<float> w32(static_cast<std::size_t>(c.n * c.k));
  std::vector<std::uint16_t> w16(w32.size());
  for (std::size_t i = 0; i < w32.size(); ++i) {
    w32[i] = rng.uniform() * 0.5f;
    if (c.dtype == DType::F16) w16[i] = float_to_half(w32[i]);
    if (c.dtype == DType::BF16) w16[i] = float_to_bf16(w32[i]);
  }
  const StoredMatrix w{c.dtype, c.dtype == DType::F32 ? static_cast<const void*>(w32.data()) : w16.data(), c.n, c.k};
  std::vector<float> bias(static_cast<std::size_t>(c.n));
  for (float& v : bias) v = rng.uniform();
  const float* b = c.bias ? bias.data() : nullptr;
  constexpr float sentinel = 12345.0f;
  std::vector<float> before(static_cast<std::size_t>(c.m * ldc), sentinel);
  for (std::int64_t i = 0; i < c.m; ++i)
    for (std::int64_t j = 0; j < c.n; ++j) before[static_cast<std::size_t>(i * ldc + j)] = rng.uniform();

  std::vector<float> got = before, rounded = before, exact = before, fp32 = before;
  const PackedBf16Matrix packed(w);
  test::set_threads(threads);
  run_kernel(kernel, a.data(), lda, c.m, packed, b, got.data(), ldc, c.epilogue, c.accumulate);
  gemm_linear(a.data(), lda, c.m, w, b, fp32.data(), ldc, c.epilogue, c.accumulate);
  test::set_threads(2);
  gemm_reference(a.data(), lda, c.m, w, b, rounded.data(), ldc, c.epilogue, c.accumulate, true);
  gemm_reference(a.data(), lda, c.m, w, b, exact.data(), ldc, c.epilogue, c.accumulate, false);

  int reported = 0;
  for (std::int64_t i = 0; i < c.m; ++i) {
    for (std::int64_t j = 0; j < ldc; ++j) {
      const auto at = static_cast<std::size_t>(i * ldc + j);
      if (j >= c.n) {
        if (got[at] != sentinel && reported++ < 5) FAIL_CHECK("padding overwritten at row " << i << " column " << j);
        continue;
      }
      double magnitude = 0;  // sum |a w|: what rounding errors scale with
      for (std::int64_t k = 0; k < c.k; ++k) magnitude += std::fabs(double{a[static_cast<std::size_t>(i * lda + k)]} * stored_value(w, j, k));
      // fp32 sums of K terms, the activation's slope (<= 1.13) and the final store's rounding.
      const double summation = 1.2 * (static_cast<double>(c.k) * 0x1p-23 * magnitude) + 1e-6 * (1 + std::fabs(rounded[at]));
      // each operand rounded to bf16 (relative error <= 2^-9, so a product's <= ~2^-8)
      const double rounding = 1.2 * 0x1p-8 * magnitude + summation;
      const bool ok = std::fabs(got[at] - rounded[at]) <= summation && std::fabs(got[at] - exact[at]) <= rounding &&
                      std::fabs(got[at] - fp32[at]) <= rounding + summation;
      if (!ok && reported++ < 5)
        FAIL_CHECK("C[" << i << "][" << j << "] = " << got[at] << ", bf16-operand reference " << rounded[at] << " (bound " << summation
                        << "), fp32 reference " << exact[at] << ", fp32 kernel " << fp32[at] << " (bound " << rounding << ")");
    }
  }
  CHECK(reported == 0);
}

}  // namespace

TEST_CASE("FOCUSPATCH_CPU_ISA's values, the ISA ceiling and the path each precision takes") {
  CHECK(parse_cpu_isa("amx", "v") == CpuIsa::Amx);
  CHECK(parse_cpu_isa("avx512bf16", "v") == CpuIsa::Avx512Bf16);
  CHECK(parse_cpu_isa("avx512", "v") == CpuIsa::Avx512);
  CHECK(parse_cpu_isa("portable", "v") == CpuIsa::Portable);
  const std::string bad = error_of([] { parse_cpu_isa("avx2", "environment variable FOCUSPATCH_CPU_ISA"); });
  CHECK(contains(bad, "FOCUSPATCH_CPU_ISA"));
  CHECK(contains(bad, "'avx2' is none of amx, avx512bf16, avx512, portable"));

  CHECK(best_cpu_isa(CpuIsa::Portable) == CpuIsa::Portable);
  CHECK(best_cpu_isa(CpuIsa::Avx512) == (cpu_features().avx512 && compiled_cpu_isa() >= CpuIsa::Avx512 ? CpuIsa::Avx512 : CpuIsa::Portable));
  CHECK(cpu_isa() <= best_cpu_isa(CpuIsa::Amx));
  // cpuid's AMX answer implies the AVX-512 BF16 one on every CPU that has shipped AMX.
  if (cpu_features().amx) CHECK(cpu_features().avx512_bf16);
  if (cpu_features().avx512_bf16) CHECK(cpu_features().missing(CpuIsa::Avx512Bf16).empty());
  else CHECK(!cpu_features().missing(CpuIsa::Avx512Bf16).empty());

  CHECK(choose_linear_path(CpuPrecision::F32, CpuIsa::Amx) == CpuLinearPath::F32Avx512);
  CHECK(choose_linear_path(CpuPrecision::BF16, CpuIsa::Amx) == CpuLinearPath::Bf16Amx);
  CHECK(choose_linear_path(CpuPrecision::BF16, CpuIsa::Avx512Bf16) == CpuLinearPath::Bf16Avx512);
  CHECK(choose_linear_path(CpuPrecision::BF16, CpuIsa::Avx512) == CpuLinearPath::F32Avx512);
  CHECK(choose_linear_path(CpuPrecision::BF16, CpuIsa::Portable) == CpuLinearPath::F32Portable);
  // attention's products follow the same instructions
  CHECK(choose_attention_path(true, CpuIsa::Amx) == CpuAttentionPath::Bf16Amx);
  CHECK(choose_attention_path(true, CpuIsa::Avx512Bf16) == CpuAttentionPath::Bf16Avx512);
  CHECK(choose_attention_path(true, CpuIsa::Avx512) == CpuAttentionPath::F32);
  CHECK(choose_attention_path(false, CpuIsa::Amx) == CpuAttentionPath::F32);

  // A bf16 backend capped below bf16 says it fell back, and why.
  const CpuBackend capped(CpuOptions{CpuPrecision::BF16, CpuIsa::Avx512});
  CHECK(!is_bf16(capped.linear_path()));
  CHECK(contains(capped.description(), "bf16 requested"));
  CHECK(CpuBackend(CpuOptions{CpuPrecision::F32, CpuIsa::Portable}).description() == "cpu f32 portable");
}

TEST_CASE("bf16 packing: every weight lands where both kernels read it, rounded to nearest even; padding is zero") {
  for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
    CAPTURE(dtype_name(dtype));
    const std::int64_t n = 37, k = 45;  // a ragged second panel, K padded to 64
    Rng rng{7};
    std::vector<float> w32(static_cast<std::size_t>(n * k));
    std::vector<std::uint16_t> w16(w32.size());
    for (std::size_t i = 0; i < w32.size(); ++i) {
      w32[i] = rng.uniform() * 3.0f;
      w16[i] = dtype == DType::F16 ? float_to_half(w32[i]) : float_to_bf16(w32[i]);
    }
    const StoredMatrix w{dtype, dtype == DType::F32 ? static_cast<const void*>(w32.data()) : w16.data(), n, k};
    const PackedBf16Matrix p(w);
    CHECK(p.panels() == 2);
    CHECK(p.pairs() == 32);
    int wrong = 0;
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t c = 0; c < k; ++c) {
        const float stored = stored_value(w, r, c);
        if (p.at(r, c) != bf16_to_float(float_to_bf16(stored))) ++wrong;
        // and directly by the documented formula, in case at() shares a mistake with the packer
        if (bf16_to_float(p.panel(r / 32)[(c / 2) * 64 + (r % 32) * 2 + c % 2]) != p.at(r, c)) ++wrong;
      }
    CHECK(wrong == 0);
    int nonzero_padding = 0;
    for (std::int64_t r = 0; r < 64; ++r)
      for (std::int64_t c = 0; c < 64; ++c)
        if ((r >= n || c >= k) && p.panel(r / 32)[(c / 2) * 64 + (r % 32) * 2 + c % 2] != 0) ++nonzero_padding;
    CHECK(nonzero_padding == 0);
  }
  // round to nearest even, not truncation: 1 + 2^-8 + 2^-9 rounds up to 1 + 2^-7
  const float x = 1.0f + 0x1p-8f + 0x1p-9f;
  const PackedBf16Matrix one(StoredMatrix{DType::F32, &x, 1, 1});
  CHECK(one.at(0, 0) == 1.0f + 0x1p-7f);
}

TEST_CASE("the AMX tile model: tdpbf16ps by hand, and the faults the hardware would raise") {
  AmxTilesReference::configure(full_amx_tiles());
  // A row 0 = pairs (1, 2), (3, 4); B pair rows 0 and 1 hold (5, 6) and (7, 8) in column 0 and
  // (-1, 0.5) and (0, 2) in column 3: C[0][0] = 1*5 + 2*6 + 3*7 + 4*8 = 70, C[0][3] = -1 + 1 + 0 + 8 = 8.
  std::uint16_t a[16][32] = {}, b[16][32] = {};
  const float a_row[4] = {1, 2, 3, 4};
  for (int i = 0; i < 4; ++i) a[0][i] = float_to_bf16(a_row[i]);
  b[0][0] = float_to_bf16(5), b[0][1] = float_to_bf16(6), b[1][0] = float_to_bf16(7), b[1][1] = float_to_bf16(8);
  b[0][6] = float_to_bf16(-1), b[0][7] = float_to_bf16(0.5f), b[1][6] = float_to_bf16(0), b[1][7] = float_to_bf16(2);
  b[0][2] = float_to_bf16(1);  // column 1's first element of pair row 0
  a[1][0] = 0x0001;             // a denormal bf16 (9.2e-41): reads as zero
  float c[16][16];
  std::fill(&c[0][0], &c[0][0] + 256, 1.0f);
  c[1][1] = 0.0f;
  AmxTilesReference::load<4>(a, 64);
  AmxTilesReference::load<6>(b, 64);
  AmxTilesReference::load<0>(c, 64);  // C accumulates: every element starts at 1
  AmxTilesReference::dot_bf16<0, 4, 6>();
  AmxTilesReference::store<0>(c, 64);
  CHECK(c[0][0] == 71.0f);
  CHECK(c[0][3] == 9.0f);
  CHECK(c[0][1] == 2.0f);  // 1 + A[0][0] B[0][2] = 1 + 1 . 1
  CHECK(c[0][2] == 1.0f);  // columns with zero B gain nothing
  CHECK(c[1][1] == 0.0f);  // 0 + denormal . 1: the denormal was read as zero
  CHECK(c[15][15] == 1.0f);

  AmxTileConfig narrow = full_amx_tiles();
  narrow.rows[4] = 8;
  AmxTilesReference::configure(narrow);
  CHECK(contains(error_of([] { AmxTilesReference::dot_bf16<0, 4, 6>(); }), "tdpbf16ps with 8 rows in A (tmm4) but 16 in C (tmm0)"));
  narrow = full_amx_tiles();
  narrow.bytes_per_row[6] = 32;
  AmxTilesReference::configure(narrow);
  CHECK(contains(error_of([] { AmxTilesReference::dot_bf16<0, 4, 6>(); }), "32 bytes per row in B (tmm6) but 64 in C (tmm0)"));
  narrow = full_amx_tiles();
  narrow.rows[6] = 8;
  AmxTilesReference::configure(narrow);
  CHECK(contains(error_of([] { AmxTilesReference::dot_bf16<0, 4, 6>(); }), "16 bf16 pairs per row of A (tmm4) but 8 rows in B (tmm6)"));
  narrow = full_amx_tiles();
  narrow.rows[5] = 0;
  narrow.bytes_per_row[5] = 0;
  AmxTilesReference::configure(narrow);
  CHECK(contains(error_of([&] { AmxTilesReference::load<5>(a, 64); }), "tileloadd on tmm5, which is not configured"));
  narrow.palette = 0;
  CHECK(contains(error_of([&] { AmxTilesReference::configure(narrow); }), "palette 0"));
  narrow = full_amx_tiles();
  narrow.rows[2] = 17;
  CHECK(contains(error_of([&] { AmxTilesReference::configure(narrow); }), "tile 2 configured as 17 rows x 64 bytes"));
  // A narrower tile loads only its rows and bytes, and zeroes the rest.
  narrow = full_amx_tiles();
  narrow.rows[1] = 2;
  narrow.bytes_per_row[1] = 8;
  AmxTilesReference::configure(narrow);
  float ones[16][16];
  std::fill(&ones[0][0], &ones[0][0] + 256, 1.0f);
  AmxTilesReference::load<1>(ones, 64);
  float out[16][16];
  std::fill(&out[0][0], &out[0][0] + 256, 7.0f);
  AmxTilesReference::store<1>(out, 64);
  CHECK(out[0][0] == 1.0f);
  CHECK(out[1][1] == 1.0f);
  CHECK(out[1][2] == 7.0f);  // past the tile's 8 bytes: untouched
  CHECK(out[2][0] == 7.0f);  // past its 2 rows: untouched
}

TEST_CASE("bf16 GEMM kernels match the double references on awkward shapes") {
  for (const Bf16Kernel kernel : kBf16Kernels) {
    if (!can_run(kernel)) continue;
    std::uint64_t seed = 1;
    for (const Case& c : {Case{1, 1, 1}, Case{1, 33, 17}, Case{3, 31, 31}, Case{15, 32, 32}, Case{14, 64, 33}, Case{17, 65, 63},
                          Case{197, 100, 768}, Case{29, 47, 2100}, Case{85, 385, 96}, Case{2, 7, 0}})
      for (const int threads : {1, 2}) check_case(c, kernel, threads, seed++);
    // Past every block of the AMX kernel (K blocks of 256, C blocks of 512 x 512 per thread),
    // each with a ragged remainder: sums carried across K blocks, then activated and added once.
    for (const int threads : {1, 2}) check_case(Case{530, 1060, 290, Epilogue::QuickGelu, true, true}, kernel, threads, seed++);
  }
}

TEST_CASE("bf16 GEMM kernels: every epilogue, with and without bias and accumulation, every stored dtype") {
  for (const Bf16Kernel kernel : kBf16Kernels) {
    if (!can_run(kernel)) continue;
    std::uint64_t seed = 100;
    for (const Epilogue e : {Epilogue::None, Epilogue::QuickGelu, Epilogue::Gelu})
      for (const bool accumulate : {false, true})
        for (const bool bias : {false, true})
          for (const DType dtype : {DType::F32, DType::F16, DType::BF16}) {
            check_case(Case{19, 45, 71, e, accumulate, bias, dtype}, kernel, 2, seed++);
            // K over several K blocks: partial sums carried between blocks
            if (dtype == DType::F32) check_case(Case{16, 33, 2085, e, accumulate, bias, dtype}, kernel, 2, seed++);
          }
  }
}

TEST_CASE("the fp32 kernels the ISA ceiling selects agree with the reference") {
  for (const CpuIsa isa : {CpuIsa::Avx512, CpuIsa::Portable}) {
    CAPTURE(cpu_isa_name(isa));
    Rng rng{3};
    const std::int64_t m = 23, n = 45, k = 70;
    std::vector<float> a(static_cast<std::size_t>(m * k)), w(static_cast<std::size_t>(n * k)), bias(static_cast<std::size_t>(n));
    for (float& v : a) v = rng.uniform();
    for (float& v : w) v = rng.uniform();
    for (float& v : bias) v = rng.uniform();
    const StoredMatrix sw{DType::F32, w.data(), n, k};
    std::vector<float> got(static_cast<std::size_t>(m * n)), want(got.size());
    gemm_linear(a.data(), k, m, sw, bias.data(), got.data(), n, Epilogue::Gelu, false, best_cpu_isa(isa));
    gemm_reference(a.data(), k, m, sw, bias.data(), want.data(), n, Epilogue::Gelu, false, false);
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double{got[i]} - want[i]));
    CHECK(worst <= 1e-4);
  }
}

TEST_CASE("CpuBackend in bf16 packs its matrices at load and runs them through its path") {
  const CpuBackend f32;
  const CpuBackend bf16(CpuOptions{CpuPrecision::BF16});
  CHECK(f32.precision() == CpuPrecision::F32);
  CHECK(!is_bf16(f32.linear_path()));
  Rng rng{11};
  const std::int64_t rows = 9, out = 40, in = 50;
  std::vector<float> w(static_cast<std::size_t>(out * in)), x(static_cast<std::size_t>(rows * in)), b(static_cast<std::size_t>(out));
  for (float& v : w) v = rng.uniform();
  for (float& v : x) v = rng.uniform();
  for (float& v : b) v = rng.uniform();
  const TensorView view{DType::F32, {out, in}, w.data()};
  const auto weight = bf16.upload_matrix(view);
  const auto bias = bf16.upload(TensorView{DType::F32, {out}, b.data()});
  std::vector<float> got(static_cast<std::size_t>(rows * out)), want(got.size());
  if (!is_bf16(bf16.linear_path())) {
    MESSAGE("bf16 backend fell back to " << bf16.description() << ": checked the fp32 result only");
    CHECK(weight.packed == nullptr);
  } else {
    REQUIRE(weight.packed != nullptr);
    CHECK(weight.packed->out() == out);
    CHECK(weight.packed->in() == in);
    // the packed copy is all the matrix keeps: changing the source afterwards changes nothing
    std::fill(w.begin(), w.end(), 0.0f);
  }
  bf16.linear(x.data(), rows, weight, &bias, got.data(), Epilogue::QuickGelu);
  if (is_bf16(bf16.linear_path())) {
    Rng again{11};
    for (float& v : w) v = again.uniform();
  }
  gemm_reference(x.data(), in, rows, StoredMatrix{DType::F32, w.data(), out, in}, b.data(), want.data(), out, Epilogue::QuickGelu, false,
                 is_bf16(bf16.linear_path()));
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double{got[i]} - want[i]));
  CHECK(worst <= 1e-4);
}
