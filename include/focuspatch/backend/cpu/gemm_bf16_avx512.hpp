#pragma once
// The bf16 linear layer on AVX-512 BF16 (vdpbf16ps, Intel Cooper Lake, AMD Zen 4):
//   C[M, N] (= | +=) epilogue(bf16(A) bf16(W)^T + bias), products summed in fp32.
//
// The same BLIS-style blocking as the fp32 kernel (gemm_f32_avx512.hpp), with two differences:
//  * W was packed once at load (gemm_bf16_packed.hpp), so the B side is never packed per call;
//    the kernel walks the packed panels in blocks of kNc columns that stay in L2 while every A
//    block passes over them;
//  * A is rounded to bf16 (vcvtne2ps2bf16, nearest even) while it is packed, as K pairs: each
//    32-bit broadcast feeds one vdpbf16ps, which does 16 lanes x 2 multiply-adds. The micro-tile
//    is again 14 x 32: 28 accumulators, 2 B vectors, 1 broadcast, 28 vdpbf16ps per K pair.
// The epilogue is the fp32 kernel's (store_tile): bias, activation and residual fused into the
// store. The functions carry their own target attribute so an AVX-512 build for a CPU without
// BF16 still compiles them; cpuid (backend/cpu/isa.hpp) decides whether they run.
#include <algorithm>
#include <cstdint>
#include <utility>

#include "focuspatch/backend/cpu/gemm_bf16_packed.hpp"
#include "focuspatch/backend/cpu/gemm_f32_avx512.hpp"

#if defined(__AVX512F__)
// Builds for a BF16 CPU (-march=native on Zen 4) need no attribute, and without one GCC inlines
// the shared fp32 helpers (transpose, store_tile) into these kernels.
#if defined(__AVX512BF16__)
#define FOCUSPATCH_TARGET_AVX512BF16
#else
#define FOCUSPATCH_TARGET_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#endif

namespace focuspatch {
namespace gemm_bf16_detail {

using gemm_detail::Store;
inline constexpr int kMr = 14, kNr = 32;
// K blocks of 2048 (a multiple of the packing's 32): every ViT-B layer but fc2 (K = 3072) runs in
// one pass; the 84 x 2048 bf16 A block (336 KiB) and a 2048 x 32 B panel (128 KiB) stay in L2.
inline constexpr std::int64_t kKc = 2048, kMc = kMr * 6, kNc = 384;
static_assert(kKc % PackedBf16Matrix::kKAlign == 0 && kNc % kNr == 0 && kNr == PackedBf16Matrix::kPanelColumns);

// Rows [0, rows) (rows <= 16) x K range [k0, k0 + kc) of fp32 A (row stride lda) -> bf16 pairs:
// dst[p * kMr + i] = (A[i][k0 + 2p], A[i][k0 + 2p + 1]) for p < ceil(kc / 2), zeros past K and rows.
FOCUSPATCH_TARGET_AVX512BF16 inline void pack_a_panel(const float* a, std::int64_t lda, std::int64_t rows, std::int64_t k0,
                                                      std::int64_t kc, std::uint32_t* dst) {
  const __mmask16 lanes = gemm_detail::first_lanes(kMr);
  for (std::int64_t k = 0; k < kc; k += 32) {
    const std::int64_t valid = std::min<std::int64_t>(32, kc - k);
    const __mmask16 lo = gemm_detail::first_lanes(valid), hi = gemm_detail::first_lanes(std::max<std::int64_t>(valid - 16, 0));
    __m512 r[16];
    for (int i = 0; i < 16; ++i) {
      if (i >= rows) {
        r[i] = _mm512_setzero_ps();
        continue;
      }
      const float* p = a + i * lda + k0 + k;
      const __m512 x0 = _mm512_maskz_loadu_ps(lo, p), x1 = _mm512_maskz_loadu_ps(hi, p + 16);
      r[i] = _mm512_castsi512_ps(reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(x1, x0)));  // lane j = pair j
    }
    gemm_detail::transpose16(r);  // r[p] lane i = row i's pair p
    const std::int64_t pairs = (valid + 1) / 2;
    for (std::int64_t p = 0; p < pairs; ++p)
      _mm512_mask_storeu_ps(reinterpret_cast<float*>(dst + (k / 2 + p) * kMr), lanes, r[p]);
  }
}

// C[0:rows, 0:nr] <- store(a (kp pairs x kMr) x b (kp pair rows of 64 bf16)).
template <int rows>
FOCUSPATCH_TARGET_AVX512BF16 inline void micro_kernel(std::int64_t kp, const std::uint32_t* __restrict a,
                                                      const std::uint16_t* __restrict b, float* c, std::int64_t ldc, std::int64_t nr,
                                                      const Store& s) {
  __m512 acc[rows][2];
#pragma GCC unroll 14
  for (int i = 0; i < rows; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (std::int64_t p = 0; p < kp; ++p) {
    const __m512bh b0 = reinterpret_cast<__m512bh>(_mm512_load_si512(b));
    const __m512bh b1 = reinterpret_cast<__m512bh>(_mm512_load_si512(b + 32));
#pragma GCC unroll 14
    for (int i = 0; i < rows; ++i) {
      const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a[i])));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], av, b1);
    }
    a += kMr;
    b += 2 * kNr;
  }
  gemm_detail::store_tile<rows>(acc, c, ldc, nr, s);
}

template <int... rows>
FOCUSPATCH_TARGET_AVX512BF16 inline void micro_kernel_rows(std::integer_sequence<int, rows...>, std::int64_t mr, std::int64_t kp,
                                                           const std::uint32_t* a, const std::uint16_t* b, float* c, std::int64_t ldc,
                                                           std::int64_t nr, const Store& s) {
  ((mr == rows + 1 ? micro_kernel<rows + 1>(kp, a, b, c, ldc, nr, s) : void()), ...);
}

inline ScratchBuffer& pack_buffer_a() {
  thread_local ScratchBuffer buffer;
  return buffer;
}

FOCUSPATCH_TARGET_AVX512BF16 inline void gemm_thread(const float* a, std::int64_t lda, std::int64_t m, const PackedBf16Matrix& w,
                                                     const float* bias, float* c, std::int64_t ldc, Epilogue epilogue, bool accumulate,
                                                     std::int64_t n_begin, std::int64_t n_end) {
  const std::int64_t k = w.in();
  // An activated residual add cannot be split over K blocks (the activation needs the whole sum).
  const bool one_block = accumulate && epilogue != Epilogue::None;
  const std::int64_t kc_max = one_block ? std::max<std::int64_t>(k, 1) : std::min(kKc, std::max<std::int64_t>(k, 1));
  const std::int64_t pairs_max = (kc_max + 1) / 2;
  // floats and 32-bit pairs are the same size
  auto* packed_a = reinterpret_cast<std::uint32_t*>(pack_buffer_a().get(static_cast<std::size_t>(kMc * (pairs_max + 16)), "cpu bf16 gemm"));
  for (std::int64_t jc = n_begin; jc < n_end; jc += kNc) {
    const std::int64_t nc = std::min(kNc, n_end - jc);
    for (std::int64_t pc = 0; pc == 0 || pc < k; pc += kc_max) {
      const std::int64_t kc = std::min(kc_max, k - pc);
      const std::int64_t kp = (kc + 1) / 2;
      Store s;
      s.add_c = accumulate || pc > 0;
      s.finish = pc + kc >= k;
      s.activate_then_add = one_block;
      s.epilogue = epilogue;
      for (std::int64_t ic = 0; ic < m; ic += kMc) {
        const std::int64_t mc = std::min(kMc, m - ic);
        if (kc > 0)
          for (std::int64_t i = 0; i < mc; i += kMr)
            pack_a_panel(a + (ic + i) * lda, lda, std::min<std::int64_t>(kMr, mc - i), pc, kc, packed_a + i * kp);
        for (std::int64_t jr = 0; jr < nc; jr += kNr) {
          const std::int64_t column = jc + jr;
          s.bias = bias ? bias + column : nullptr;
          const std::uint16_t* panel = w.panel(column / kNr, pc / 2);
          for (std::int64_t ir = 0; ir < mc; ir += kMr)
            micro_kernel_rows(std::make_integer_sequence<int, kMr>(), std::min<std::int64_t>(kMr, mc - ir), kp, packed_a + ir * kp, panel,
                              c + (ic + ir) * ldc + column, ldc, std::min<std::int64_t>(kNr, nc - jr), s);
        }
      }
    }
  }
}

}  // namespace gemm_bf16_detail

// C[m, w.out()] (row stride ldc) (= | +=) epilogue(bf16(A) W^T + bias) with W packed at load.
inline void gemm_bf16_avx512(const float* a, std::int64_t lda, std::int64_t m, const PackedBf16Matrix& w, const float* bias, float* c,
                             std::int64_t ldc, Epilogue epilogue, bool accumulate) {
  gemm_detail::split_columns(m, w.out(), w.in(), gemm_bf16_detail::kNr, [&](std::int64_t begin, std::int64_t end) {
    gemm_bf16_detail::gemm_thread(a, lda, m, w, bias, c, ldc, epilogue, accumulate, begin, end);
  });
}

}  // namespace focuspatch

#endif  // __AVX512F__
