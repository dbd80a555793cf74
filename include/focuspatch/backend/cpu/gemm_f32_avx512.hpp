#pragma once
// The CPU backend's linear layer as one fused GEMM:
//   C[M, N] (= | +=) epilogue(A[M, K] W[N, K]^T + bias[N])
// with W stored as PyTorch's Linear stores it ([out, in], row-major) in fp32, fp16 or bf16, so half
// precision weights stay in the mapped file and are widened only while their panels are packed.
//
// With AVX-512 it is a BLIS-style GEMM of our own (Eigen's reached 54-76 % of this machine's fp32
// peak and repacked the weights on every call into a layout it then discarded):
//  * loops, per thread:  jc over kNc columns of W -> pc over kKc of K: pack B = W^T block (kc x nc)
//    -> ic over kMc rows of A: pack A block (mc x kc) -> jr over kNr columns -> ir over kMr rows:
//    micro-kernel. The A block and the current B micro-panel stay in L2, the B block in L3;
//  * micro-kernel kMr x kNr = 14 x 32: 28 of the 32 zmm registers hold C, 2 the B row, 1 the
//    broadcast A value; a ragged last row panel runs a kernel of just its rows. (12 x 32 measured
//    a few % slower on Zen 4; the kernel streams 184 bytes per 28 FMAs, well within L2 bandwidth.)
//  * threads split N in whole micro-panels, so at batch 1 (M = 197) both threads still get half of
//    every layer; each packs the A blocks it needs itself (no barriers, A is small next to W);
//  * packing transposes 16 x 16 blocks in registers; fp16 is widened with vcvtph2ps, bf16 by a
//    16-bit shift, both exact;
//  * the epilogue (bias, activation, residual add) is applied to the registers on the last K block,
//    with masked loads and stores for edge tiles, so C is written once per K block and never
//    revisited by a separate pass;
//  * pack buffers are per thread, 64-byte aligned, kept and grown only, so a steady stream of
//    calls allocates nothing.
// Used when the build targets AVX-512 and the process's ISA (backend/cpu/isa.hpp) allows it;
// gemm_f32_portable.hpp is the other fp32 path, gemm_reference.hpp the reference for both.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#include "focuspatch/backend/cpu/gemm_common.hpp"
#include "focuspatch/backend/cpu/scratch_buffer.hpp"
#include "focuspatch/backend/cpu/vector_math.hpp"
#include "focuspatch/core/half.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>

namespace focuspatch {
namespace gemm_detail {

inline constexpr int kMr = 14, kNr = 32;
// Measured on Zen 4 (1 MiB L2): K blocks of 1024 run every K = 768 layer in one pass and keep the
// 84 x 1024 A block (336 KiB) and a 1024 x 32 B micro-panel (128 KiB) in L2.
inline constexpr std::int64_t kKc = 1024, kMc = kMr * 6, kNc = 384;

inline __mmask16 first_lanes(std::int64_t count) {
  return count >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << count) - 1u);
}

// 16 rows of 16 floats -> 16 columns (r[i] lane j becomes r[j] lane i). Always inlined: with two
// callers GCC otherwise keeps an out-of-line copy, r[] goes through memory, and GCC 12 warns about
// the _mm512_undefined_ps() inside the shuffle intrinsics.
[[gnu::always_inline]] inline void transpose16(__m512 r[16]) {
  __m512 t[16], u[16];
  for (int j = 0; j < 8; ++j) {
    t[2 * j] = _mm512_unpacklo_ps(r[2 * j], r[2 * j + 1]);
    t[2 * j + 1] = _mm512_unpackhi_ps(r[2 * j], r[2 * j + 1]);
  }
  for (int j = 0; j < 4; ++j) {
    u[4 * j + 0] = _mm512_shuffle_ps(t[4 * j], t[4 * j + 2], 0x44);
    u[4 * j + 1] = _mm512_shuffle_ps(t[4 * j], t[4 * j + 2], 0xEE);
    u[4 * j + 2] = _mm512_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0x44);
    u[4 * j + 3] = _mm512_shuffle_ps(t[4 * j + 1], t[4 * j + 3], 0xEE);
  }
  for (int e = 0; e < 4; ++e) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x44), v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xEE);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x44), v3 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xEE);
    r[e] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    r[4 + e] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
    r[8 + e] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    r[12 + e] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
  }
}

// 16 consecutive elements (count <= 16 of them valid, the rest read as 0) widened to fp32.
template <DType T>
inline __m512 load_row(const void* base, std::int64_t offset, std::int64_t count) {
  if constexpr (T == DType::F32) {
    const float* p = static_cast<const float*>(base) + offset;
    return count >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(first_lanes(count), p);
  } else {
    const std::uint16_t* p = static_cast<const std::uint16_t*>(base) + offset;
    __m256i bits;
    if (count >= 16) {
      bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    } else {  // K's ragged end only: copy, as masked 16-bit loads need AVX-512BW
      alignas(32) std::uint16_t tail[16] = {};
      std::memcpy(tail, p, static_cast<std::size_t>(count) * sizeof(std::uint16_t));
      bits = _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
    }
    if constexpr (T == DType::F16) return _mm512_cvtph_ps(bits);
    else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
}

// Packs rows [0, rows) (rows <= 16) x columns [k0, k0 + kc) of a row-major matrix with row stride ld
// into dst[k * dst_stride + i], writing `width` lanes per k (rows beyond `rows` as zeros).
template <DType T>
inline void pack_rows16(const void* src, std::int64_t ld, std::int64_t rows, std::int64_t k0, std::int64_t kc, float* dst,
                        std::int64_t dst_stride, int width) {
  const __mmask16 lanes = first_lanes(width);
  for (std::int64_t k = 0; k < kc; k += 16) {
    const std::int64_t valid = std::min<std::int64_t>(16, kc - k);
    __m512 r[16];
    for (int i = 0; i < 16; ++i) r[i] = i < rows ? load_row<T>(src, i * ld + k0 + k, valid) : _mm512_setzero_ps();
    transpose16(r);
    for (int kk = 0; kk < valid; ++kk) {
      float* d = dst + (k + kk) * dst_stride;
      if (width == 16) _mm512_storeu_ps(d, r[kk]);
      else _mm512_mask_storeu_ps(d, lanes, r[kk]);
    }
  }
}

// B block: columns [n0, n0 + nc) of C, i.e. rows of W, times K range [k0, k0 + kc) -> micro-panels
// of kc x kNr, zero-padded past N.
template <DType T>
inline void pack_b(const StoredMatrix& w, std::int64_t n0, std::int64_t nc, std::int64_t k0, std::int64_t kc, float* dst) {
  const std::size_t elem = dtype_size(T);
  for (std::int64_t j = 0; j < nc; j += kNr) {
    float* panel = dst + j * kc;
    for (int half = 0; half < kNr; half += 16) {
      const std::int64_t rows = std::clamp<std::int64_t>(nc - j - half, 0, 16);
      const void* src = static_cast<const std::byte*>(w.data) + static_cast<std::size_t>((n0 + j + half) * w.in) * elem;
      pack_rows16<T>(src, w.in, rows, k0, kc, panel + half, kNr, 16);
    }
  }
}

// A block: rows [m0, m0 + mc) x K range [k0, k0 + kc) -> micro-panels of kc x kMr, zero-padded past M.
inline void pack_a(const float* a, std::int64_t lda, std::int64_t m0, std::int64_t mc, std::int64_t k0, std::int64_t kc,
                   float* dst) {
  for (std::int64_t i = 0; i < mc; i += kMr) {
    const std::int64_t rows = std::min<std::int64_t>(kMr, mc - i);
    pack_rows16<DType::F32>(a + (m0 + i) * lda, lda, rows, k0, kc, dst + i * kc, kMr, kMr);
  }
}

// C[0:rows, 0:nr] (ldc) <- store(a_panel (kc x kMr) x b_panel (kc x kNr)), computing `rows` rows
// only: a ragged last row panel (197 = 14 x 14 + 1) costs what it holds, not a whole tile.
// Stores a rows x 32 tile of fp32 sums (acc[i][0..1]) to C with the epilogue: every micro-kernel
// (fp32 FMA, bf16 dot products, AMX tiles) ends here, so they all fuse the same way.
template <int rows>
inline void store_tile(__m512 (&acc)[rows][2], float* c, std::int64_t ldc, std::int64_t nr, const Store& s) {
  const __mmask16 m0 = first_lanes(nr), m1 = nr > 16 ? first_lanes(nr - 16) : static_cast<__mmask16>(0);
  __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
  if (s.finish && s.bias) {
    bias0 = _mm512_maskz_loadu_ps(m0, s.bias);
    bias1 = _mm512_maskz_loadu_ps(m1, s.bias + 16);
  }
#pragma GCC unroll 14
  for (int i = 0; i < rows; ++i) {
    float* row = c + i * ldc;
    __m512 v0 = acc[i][0], v1 = acc[i][1];
    if (s.activate_then_add) {
      v0 = vector_math::activate_ps(_mm512_add_ps(v0, bias0), s.epilogue);
      v1 = vector_math::activate_ps(_mm512_add_ps(v1, bias1), s.epilogue);
      v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
      v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row + 16));
    } else {
      if (s.add_c) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row + 16));
      }
      if (s.finish) {
        v0 = _mm512_add_ps(v0, bias0);
        v1 = _mm512_add_ps(v1, bias1);
      }
    }
    _mm512_mask_storeu_ps(row, m0, v0);
    _mm512_mask_storeu_ps(row + 16, m1, v1);
  }
  // The activation runs over the stored tile (still in L1) once no accumulator is live: where the
  // compiler does not inline it, a call among 28 live zmm registers spilled them all, and fc +
  // QuickGELU ran 15 % slower than fc alone.
  if (s.finish && s.epilogue != Epilogue::None && !s.activate_then_add) {
    for (int i = 0; i < rows; ++i) {
      float* row = c + i * ldc;
      _mm512_mask_storeu_ps(row, m0, vector_math::activate_ps(_mm512_maskz_loadu_ps(m0, row), s.epilogue));
      _mm512_mask_storeu_ps(row + 16, m1, vector_math::activate_ps(_mm512_maskz_loadu_ps(m1, row + 16), s.epilogue));
    }
  }
}

template <int rows>
inline void micro_kernel(std::int64_t kc, const float* __restrict a, const float* __restrict b, float* c, std::int64_t ldc,
                         std::int64_t nr, const Store& s) {
  __m512 acc[rows][2];
#pragma GCC unroll 14
  for (int i = 0; i < rows; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (std::int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 14
    for (int i = 0; i < rows; ++i) {
      const __m512 av = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
    }
    a += kMr;
    b += kNr;
  }
  store_tile<rows>(acc, c, ldc, nr, s);
}

template <int... rows>
inline void micro_kernel_rows(std::integer_sequence<int, rows...>, std::int64_t mr, std::int64_t kc, const float* a,
                              const float* b, float* c, std::int64_t ldc, std::int64_t nr, const Store& s) {
  ((mr == rows + 1 ? micro_kernel<rows + 1>(kc, a, b, c, ldc, nr, s) : void()), ...);
}

// The pack buffers of the calling thread, shared by every dtype.
inline ScratchBuffer& pack_buffer_a() {
  thread_local ScratchBuffer buffer;
  return buffer;
}
inline ScratchBuffer& pack_buffer_b() {
  thread_local ScratchBuffer buffer;
  return buffer;
}

template <DType T>
inline void gemm_thread(const float* a, std::int64_t lda, std::int64_t m, const StoredMatrix& w, const float* bias, float* c,
                        std::int64_t ldc, Epilogue epilogue, bool accumulate, std::int64_t n_begin, std::int64_t n_end) {
  const std::int64_t k = w.in;
  // An activated residual add cannot be split over K blocks (the activation needs the whole sum).
  const bool one_block = accumulate && epilogue != Epilogue::None;
  const std::int64_t kc_max = one_block ? std::max<std::int64_t>(k, 1) : std::min(kKc, std::max<std::int64_t>(k, 1));
  const std::int64_t kc_padded = (kc_max + 15) / 16 * 16;
  float* packed_a = pack_buffer_a().get(static_cast<std::size_t>(kMc * kc_padded), "cpu gemm");
  float* packed_b = pack_buffer_b().get(static_cast<std::size_t>(kNc * kc_padded), "cpu gemm");
  for (std::int64_t jc = n_begin; jc < n_end; jc += kNc) {
    const std::int64_t nc = std::min(kNc, n_end - jc);
    // K == 0 still runs one (empty) block so that the bias, activation and residual are applied.
    for (std::int64_t pc = 0; pc == 0 || pc < k; pc += kc_max) {
      const std::int64_t kc = std::min(kc_max, k - pc);
      Store s;
      s.add_c = accumulate || pc > 0;
      s.finish = pc + kc >= k;
      s.activate_then_add = one_block;
      s.epilogue = epilogue;
      if (kc > 0) pack_b<T>(w, jc, nc, pc, kc, packed_b);
      // A is repacked for every column block: packing it once for all of M measured 5 % slower
      // at batch 1 (the packed A then comes from L3; freshly packed, it is still in L2).
      for (std::int64_t ic = 0; ic < m; ic += kMc) {
        const std::int64_t mc = std::min(kMc, m - ic);
        if (kc > 0) pack_a(a, lda, ic, mc, pc, kc, packed_a);
        for (std::int64_t jr = 0; jr < nc; jr += kNr) {
          s.bias = bias ? bias + jc + jr : nullptr;
          for (std::int64_t ir = 0; ir < mc; ir += kMr)
            micro_kernel_rows(std::make_integer_sequence<int, kMr>(), std::min<std::int64_t>(kMr, mc - ir), kc,
                              packed_a + ir * kc, packed_b + jr * kc, c + (ic + ir) * ldc + jc + jr, ldc,
                              std::min<std::int64_t>(kNr, nc - jr), s);
        }
      }
    }
  }
}

template <DType T>
inline void gemm_f32_avx512(const float* a, std::int64_t lda, std::int64_t m, const StoredMatrix& w, const float* bias, float* c,
                            std::int64_t ldc, Epilogue epilogue, bool accumulate) {
  split_columns(m, w.out, w.in, kNr, [&](std::int64_t begin, std::int64_t end) {
    gemm_thread<T>(a, lda, m, w, bias, c, ldc, epilogue, accumulate, begin, end);
  });
}

}  // namespace gemm_detail
}  // namespace focuspatch

#endif  // __AVX512F__
