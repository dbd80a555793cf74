#pragma once
// Multi-head attention for the CPU backend in fp32, computed a block of queries at a time so that
// nothing of size seq x seq is ever written to memory. The blocking (attention_detail::run_attention)
// is shared: the bf16 kernels (attention_bf16_avx512.hpp) plug into it, and attention.hpp picks.
//
// Per (batch, head) the keys are packed once, transposed, into panels of 64 keys (so the Q K^T
// kernel reads one contiguous stream and vectorises across keys), and the values into rows padded
// to whole vectors. Each tile of 6 query rows then goes through three steps without leaving L1:
// its scores against every key (register-tiled, 6 rows x 64 keys), a full-row softmax per query
// (6 rows x 592 keys = 14 KiB at seq 577), and O = P V with the 1/sum normalisation folded into
// the store. An online (running-max) softmax over 128-key chunks, key chunks outside and tiles
// inside, bounds that buffer for any length but measured 4-12 % slower at seq 77-577 (one thread,
// AVX-512, head_dim 64): the whole row fits, and the full-row form skips the rescaling passes.
//
// The 1/sqrt(head_dim) scale is folded into the exponent, exp(s * scale - max * scale) as one
// FMA; the rounding of max * scale is common to every term of a row and cancels in the division.
//
// Threads split batch x heads x query blocks, so two threads share the work even at batch 1;
// the static schedule hands each thread a contiguous run, so a thread repacks K/V only when its
// run crosses into the next head, and it prefetches the next task's rows while it computes.
// Scratch is per thread and survives between calls (no allocation once it has grown to the
// largest shape seen).
//
// Built with AVX-512 the kernels use it explicitly; otherwise the same blocking runs on GCC/Clang
// vector extensions at the target's width (AVX2 or SSE), or as plain loops for other compilers,
// and exp is the same polynomial in scalar code. All compute the same thing and pass the same
// tests. Without AVX-512 (one thread, seq 197, head_dim 64) this runs at ~36 GFLOP/s with AVX2
// and ~18 with baseline x86-64 SSE2, against 32 and 18 for the Eigen version it replaced.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <span>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "focuspatch/backend/cpu/parallel.hpp"
#include "focuspatch/backend/ops.hpp"
#include "focuspatch/backend/cpu/scratch_buffer.hpp"
#include "focuspatch/core/error.hpp"

namespace focuspatch {

namespace attention_detail {

inline constexpr int kLanes = 16;       // floats per vector (one zmm; the portable path mimics it)
inline constexpr int kPanelKeys = 64;   // keys per packed K panel: 4 vectors across
inline constexpr int kTileRows = 6;     // query rows per register tile: 6 x 4 accumulators of 16
inline constexpr int kBlockRows = 48;   // query rows per task: a multiple of kTileRows
inline constexpr int kSlabVectors = 4;  // output columns per P V pass, in vectors

constexpr std::int64_t round_up(std::int64_t n, std::int64_t to) { return (n + to - 1) / to * to; }

// exp(x) for float x: x = n ln2 + r with |r| <= ln2 / 2 (ln2 split in two so n ln2 is exact),
// e^r by its Taylor series to degree 7 (truncation < 6e-9 relative), times 2^n. Below -104 the
// result underflows to 0, above 88.73 it is +inf, NaN stays NaN.
inline constexpr float kExpLow = -110.0f, kExpHigh = 89.0f;
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2High = 0.693359375f, kLn2Low = -2.12194440e-4f;
inline constexpr float kInvFactorial[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};

inline float exp_scalar(float x) {
  // Written without library calls or branches (std::fma and std::nearbyint are calls on baseline
  // x86-64) so that loops over it vectorise; NaN is set aside and put back at the end.
  const bool is_nan = x != x;
  const float t = is_nan ? 0.0f : std::min(std::max(x, kExpLow), kExpHigh);
  // Nearest integer (ties away from zero) by truncation; t is clamped, so it fits an int.
  const float n = static_cast<float>(static_cast<int>(t * kLog2e + (t < 0.0f ? -0.5f : 0.5f)));
  float r = t - n * kLn2High;  // exact: kLn2High has 9 significant bits, n at most 8
  r = r - n * kLn2Low;
  float p = kInvFactorial[7];
  for (int k = 6; k >= 0; --k) p = p * r + kInvFactorial[k];
  // 2^n in two halves, each a normal float, so that results in the subnormal range round once at
  // the last multiply instead of flushing early; n is in [-159, 129].
  const int e = static_cast<int>(n);
  const int half = e / 2;
  auto power_of_two = [](int k) {
    const std::uint32_t bits = static_cast<std::uint32_t>(k + 127) << 23;
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  };
  const float result = p * power_of_two(half) * power_of_two(e - half);
  return is_nan ? x : result;
}

#if defined(__AVX512F__)
inline __m512 exp16(__m512 x) {
  // max/min return their second operand when either is NaN: x goes second so NaN passes through.
  x = _mm512_min_ps(_mm512_set1_ps(kExpHigh), _mm512_max_ps(_mm512_set1_ps(kExpLow), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2High), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Low), r);
  __m512 p = _mm512_set1_ps(kInvFactorial[7]);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kInvFactorial[6]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kInvFactorial[5]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kInvFactorial[4]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kInvFactorial[3]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kInvFactorial[2]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kInvFactorial[1]));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kInvFactorial[0]));
  return _mm512_scalef_ps(p, n);  // p * 2^n with correct underflow to subnormals and 0
}

inline __mmask16 tail_mask(std::int64_t count) {
  return count >= kLanes ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << count) - 1u);
}
#endif

#if !defined(__AVX512F__) && defined(__GNUC__)
// Without AVX-512 the kernels use GCC/Clang vector extensions at the widest width the target has
// registers for (AVX: 8 floats, otherwise 4), so they still compile to packed arithmetic.
#if defined(__AVX__)
inline constexpr int kNativeFloats = 8;
#else
inline constexpr int kNativeFloats = 4;
#endif
using NativeVector = float __attribute__((vector_size(kNativeFloats * sizeof(float))));
inline constexpr int kNativePerLane = kLanes / kNativeFloats;  // native vectors per 16-float vector
inline NativeVector load_native(const float* p) {
  NativeVector v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_native(float* p, NativeVector v) { std::memcpy(p, &v, sizeof v); }
#endif

// The shape run_attention gives the register-tiled families (fp32, and bf16 on vdpbf16ps): tiles
// of kTileRows query rows, tasks of kBlockRows, keys and head dimensions padded to whole vectors.
struct RegisterTileShape {
  static constexpr int kTileRows = attention_detail::kTileRows, kBlockRows = attention_detail::kBlockRows;
  static constexpr int kKeyAlign = kLanes, kDimAlign = kLanes;
};

// Per-thread working memory, 64-byte aligned, grown on demand and kept for later calls.
class Scratch {
 public:
  float* k_panels = nullptr;           // K^T in panels of kPanelKeys keys: [panel][dim][keys in panel]
  float* v_rows = nullptr;             // V rows padded to whole vectors: [seq][dim_padded]
  float* q_block = nullptr;            // the task's query rows, padded to whole tiles with zero rows
  float* scores = nullptr;             // scores, then probabilities, of one tile: [kTileRows][keys_padded]
  float* inv_sum = nullptr;            // 1 / softmax denominator per block row
  const float* packed_head = nullptr;  // the K (or V) pointer whose panels are packed now

  void reserve(std::int64_t keys_padded, std::int64_t dim, std::int64_t dim_padded) {
    const std::int64_t k = keys_padded * dim, v = keys_padded * dim_padded, q = kBlockRows * dim, s = kTileRows * keys_padded,
                       sums = kBlockRows;
    const std::int64_t total = round_up(k, kLanes) + round_up(v, kLanes) + round_up(q, kLanes) + s + sums;
    k_panels = memory_.get(static_cast<std::size_t>(round_up(total, kLanes)), "cpu attention");
    v_rows = k_panels + round_up(k, kLanes);
    q_block = v_rows + round_up(v, kLanes);
    scores = q_block + round_up(q, kLanes);
    inv_sum = scores + s;
    packed_head = nullptr;  // the buffer may hold new contents at the same address: always repack
  }

 private:
  ScratchBuffer memory_;
};

// dst[0, count) = src[0, count), then zeros up to padded.
inline void copy_padded(float* dst, const float* src, std::int64_t count, std::int64_t padded) {
#if defined(__AVX512F__)
  for (std::int64_t c = 0; c < padded; c += kLanes) {
    const __mmask16 m = c < count ? tail_mask(count - c) : __mmask16(0);
    _mm512_mask_storeu_ps(dst + c, tail_mask(padded - c), _mm512_maskz_loadu_ps(m, src + c));
  }
#else
  std::copy(src, src + count, dst);
  std::fill(dst + count, dst + padded, 0.0f);
#endif
}

// K^T panels (zero keys beyond seq up to keys_padded) and padded V rows for one head.
inline void pack_head(const float* k, const float* v, std::int64_t stride, std::int64_t seq, std::int64_t keys_padded,
                      std::int64_t dim, std::int64_t dim_padded, Scratch& s) {
  for (std::int64_t first = 0; first < keys_padded; first += kPanelKeys) {
    const std::int64_t width = std::min<std::int64_t>(kPanelKeys, keys_padded - first);
    float* panel = s.k_panels + first * dim;
#if defined(__AVX512F__)
    // 16 keys x 16 dims at a time, transposed in registers: four rounds of pairing row p with
    // row p + 8 into rows 2p (low halves interleaved) and 2p + 1 (high halves) rotate the 8-bit
    // (row, lane) index left by one each, so after four the row and lane bits have swapped.
    const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (std::int64_t key0 = 0; key0 < width; key0 += kLanes) {
      for (std::int64_t c0 = 0; c0 < dim; c0 += kLanes) {
        const __mmask16 columns = tail_mask(dim - c0);
        __m512 rows[kLanes], next[kLanes];
        for (int l = 0; l < kLanes; ++l) {
          const std::int64_t j = first + key0 + l;
          rows[l] = j < seq ? _mm512_maskz_loadu_ps(columns, k + j * stride + c0) : _mm512_setzero_ps();
        }
        for (int round = 0; round < 4; ++round) {
#pragma GCC unroll 8
          for (int p = 0; p < kLanes / 2; ++p) {
            next[2 * p] = _mm512_permutex2var_ps(rows[p], low, rows[p + kLanes / 2]);
            next[2 * p + 1] = _mm512_permutex2var_ps(rows[p], high, rows[p + kLanes / 2]);
          }
#pragma GCC unroll 16
          for (int l = 0; l < kLanes; ++l) rows[l] = next[l];
        }
#pragma GCC unroll 16
        for (int c = 0; c < kLanes; ++c)
          if (c0 + c < dim) _mm512_store_ps(panel + (c0 + c) * width + key0, rows[c]);
      }
    }
#else
    for (std::int64_t c = 0; c < dim; ++c)
      for (std::int64_t key = 0; key < width; ++key) {
        const std::int64_t j = first + key;
        panel[c * width + key] = j < seq ? k[j * stride + c] : 0.0f;
      }
#endif
  }
  for (std::int64_t j = 0; j < seq; ++j) copy_padded(s.v_rows + j * dim_padded, v + j * stride, dim, dim_padded);
}

// scores[r][first + 16 * vec + l] = sum_c q[r][c] * panel[c][16 * vec + l], for kTileRows rows and
// Vectors vectors of keys; panel rows are panel_width apart.
template <int Vectors>
inline void score_tile(const float* q, std::int64_t dim, const float* panel, std::int64_t panel_width, float* scores,
                       std::int64_t score_stride) {
#if defined(__AVX512F__)
  __m512 acc[kTileRows][Vectors];
#pragma GCC unroll 8
  for (int r = 0; r < kTileRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) acc[r][v] = _mm512_setzero_ps();
  for (std::int64_t c = 0; c < dim; ++c) {
    __m512 keys[Vectors];
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) keys[v] = _mm512_load_ps(panel + c * panel_width + v * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < kTileRows; ++r) {
      const __m512 qr = _mm512_set1_ps(q[r * dim + c]);
#pragma GCC unroll 4
      for (int v = 0; v < Vectors; ++v) acc[r][v] = _mm512_fmadd_ps(qr, keys[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kTileRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) _mm512_store_ps(scores + r * score_stride + v * kLanes, acc[r][v]);
#elif defined(__GNUC__)
  // Two native vectors of keys at a time: 6 x 2 accumulators fit the 16 registers of SSE or AVX2.
  for (int part = 0; part < Vectors * kNativePerLane; part += 2) {
    NativeVector acc[kTileRows][2] = {};
    for (std::int64_t c = 0; c < dim; ++c) {
      const float* keys = panel + c * panel_width + part * kNativeFloats;
      const NativeVector k0 = load_native(keys), k1 = load_native(keys + kNativeFloats);
      for (int r = 0; r < kTileRows; ++r) {
        const float qr = q[r * dim + c];
        acc[r][0] += qr * k0;
        acc[r][1] += qr * k1;
      }
    }
    for (int r = 0; r < kTileRows; ++r) {
      store_native(scores + r * score_stride + part * kNativeFloats, acc[r][0]);
      store_native(scores + r * score_stride + (part + 1) * kNativeFloats, acc[r][1]);
    }
  }
#else
  constexpr int width = Vectors * kLanes;
  float acc[kTileRows][width] = {};
  for (std::int64_t c = 0; c < dim; ++c) {
    const float* keys = panel + c * panel_width;
    for (int r = 0; r < kTileRows; ++r) {
      const float qr = q[r * dim + c];
      for (int l = 0; l < width; ++l) acc[r][l] += qr * keys[l];
    }
  }
  for (int r = 0; r < kTileRows; ++r) std::memcpy(scores + r * score_stride, acc[r], sizeof acc[r]);
#endif
}

// Scores of kTileRows queries against keys [0, keys), keys a multiple of kLanes and at most
// keys_padded, the packed length.
inline void score_rows(const float* q, std::int64_t dim, const float* k_panels, std::int64_t keys, std::int64_t keys_padded,
                       float* scores, std::int64_t score_stride) {
  for (std::int64_t first = 0; first < keys; first += kPanelKeys) {
    // A panel's rows are its packed width apart (64 but for the head's last panel), even when
    // fewer of its keys are needed here (causal tiles).
    const std::int64_t packed_width = std::min<std::int64_t>(kPanelKeys, keys_padded - first);
    const std::int64_t needed = std::min<std::int64_t>(kPanelKeys, keys - first);
    const float* panel = k_panels + first * dim;
    float* out = scores + first;
    switch (needed / kLanes) {
      case 4: score_tile<4>(q, dim, panel, packed_width, out, score_stride); break;
      case 3: score_tile<3>(q, dim, panel, packed_width, out, score_stride); break;
      case 2: score_tile<2>(q, dim, panel, packed_width, out, score_stride); break;
      default: score_tile<1>(q, dim, panel, packed_width, out, score_stride); break;
    }
  }
}

// GCC 12's reduce intrinsics extract from _mm512_undefined registers, which -Wuninitialized
// flags once they are inlined deep enough (GCC PR 105593): not a real read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
// Softmax numerators of one row in place: row[j] = exp((row[j] - max) * scale) for j < valid,
// 0 for valid <= j < cleared. Returns 1 / sum.
inline float softmax_row(float* row, std::int64_t valid, std::int64_t cleared, float scale) {
#if defined(__AVX512F__)
  const __m512 minus_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 mx = minus_inf;
  for (std::int64_t j = 0; j < valid; j += kLanes)
    mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(minus_inf, tail_mask(valid - j), row + j));
  const float row_max = _mm512_reduce_max_ps(mx);
  const __m512 vscale = _mm512_set1_ps(scale), shift = _mm512_set1_ps(-row_max * scale);
  __m512 sum = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < valid; j += kLanes) {
    const __mmask16 m = tail_mask(valid - j);
    const __m512 p = exp16(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, row + j), vscale, shift));
    sum = _mm512_mask_add_ps(sum, m, sum, p);
    _mm512_mask_storeu_ps(row + j, m, p);
  }
  const float total = _mm512_reduce_add_ps(sum);
#else
  float row_max = -std::numeric_limits<float>::infinity();
  for (std::int64_t j = 0; j < valid; ++j) row_max = std::max(row_max, row[j]);
  const float shift = -row_max * scale;
  float total = 0.0f;
  for (std::int64_t j = 0; j < valid; ++j) {
    row[j] = exp_scalar(row[j] * scale + shift);
    total += row[j];
  }
#endif
  std::fill(row + valid, row + std::max(valid, cleared), 0.0f);
  return 1.0f / total;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// out[r][c0 + ...] = inv_sum[r] * sum_j p[r][j] * v[j][c0 + ...] for kTileRows rows (only the first
// rows_out stored), columns [c0, c0 + columns), Vectors = ceil(columns / 16).
template <int Vectors>
inline void value_tile(const float* p, std::int64_t p_stride, std::int64_t keys, const float* v, std::int64_t v_stride,
                       const float* inv_sum, std::int64_t rows_out, std::int64_t columns, float* out, std::int64_t out_stride) {
#if defined(__AVX512F__)
  __m512 acc[kTileRows][Vectors];
#pragma GCC unroll 8
  for (int r = 0; r < kTileRows; ++r)
#pragma GCC unroll 4
    for (int vec = 0; vec < Vectors; ++vec) acc[r][vec] = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < keys; ++j) {
    __m512 values[Vectors];
#pragma GCC unroll 4
    for (int vec = 0; vec < Vectors; ++vec) values[vec] = _mm512_load_ps(v + j * v_stride + vec * kLanes);
#pragma GCC unroll 8
    for (int r = 0; r < kTileRows; ++r) {
      const __m512 pr = _mm512_set1_ps(p[r * p_stride + j]);
#pragma GCC unroll 4
      for (int vec = 0; vec < Vectors; ++vec) acc[r][vec] = _mm512_fmadd_ps(pr, values[vec], acc[r][vec]);
    }
  }
  for (int r = 0; r < kTileRows; ++r) {
    if (r >= rows_out) break;
    const __m512 inv = _mm512_set1_ps(inv_sum[r]);
#pragma GCC unroll 4
    for (int vec = 0; vec < Vectors; ++vec)
      _mm512_mask_storeu_ps(out + r * out_stride + vec * kLanes, tail_mask(columns - vec * kLanes),
                            _mm512_mul_ps(acc[r][vec], inv));
  }
#elif defined(__GNUC__)
  for (int part = 0; part < Vectors * kNativePerLane; part += 2) {
    NativeVector acc[kTileRows][2] = {};
    for (std::int64_t j = 0; j < keys; ++j) {
      const float* values = v + j * v_stride + part * kNativeFloats;
      const NativeVector v0 = load_native(values), v1 = load_native(values + kNativeFloats);
      for (int r = 0; r < kTileRows; ++r) {
        const float pr = p[r * p_stride + j];
        acc[r][0] += pr * v0;
        acc[r][1] += pr * v1;
      }
    }
    float row[2 * kNativeFloats];
    const std::int64_t first = part * kNativeFloats, count = std::min<std::int64_t>(2 * kNativeFloats, columns - first);
    for (std::int64_t r = 0; r < rows_out; ++r) {
      store_native(row, acc[r][0] * inv_sum[r]);
      store_native(row + kNativeFloats, acc[r][1] * inv_sum[r]);
      std::copy(row, row + std::max<std::int64_t>(count, 0), out + r * out_stride + first);
    }
  }
#else
  constexpr int width = Vectors * kLanes;
  float acc[kTileRows][width] = {};
  for (std::int64_t j = 0; j < keys; ++j) {
    const float* values = v + j * v_stride;
    for (int r = 0; r < kTileRows; ++r) {
      const float pr = p[r * p_stride + j];
      for (int l = 0; l < width; ++l) acc[r][l] += pr * values[l];
    }
  }
  for (std::int64_t r = 0; r < rows_out; ++r)
    for (std::int64_t l = 0; l < columns; ++l) out[r * out_stride + l] = acc[r][l] * inv_sum[r];
#endif
}

inline void value_rows(const float* p, std::int64_t p_stride, std::int64_t keys, const float* v_rows, std::int64_t dim,
                       std::int64_t dim_padded, const float* inv_sum, std::int64_t rows_out, float* out,
                       std::int64_t out_stride) {
  constexpr std::int64_t slab = kSlabVectors * kLanes;
  for (std::int64_t c0 = 0; c0 < dim; c0 += slab) {
    const std::int64_t columns = std::min(slab, dim - c0);
    const float* v = v_rows + c0;
    switch ((columns + kLanes - 1) / kLanes) {
      case 4: value_tile<4>(p, p_stride, keys, v, dim_padded, inv_sum, rows_out, columns, out + c0, out_stride); break;
      case 3: value_tile<3>(p, p_stride, keys, v, dim_padded, inv_sum, rows_out, columns, out + c0, out_stride); break;
      case 2: value_tile<2>(p, p_stride, keys, v, dim_padded, inv_sum, rows_out, columns, out + c0, out_stride); break;
      default: value_tile<1>(p, p_stride, keys, v, dim_padded, inv_sum, rows_out, columns, out + c0, out_stride); break;
    }
  }
}

// Asks for the cache line holding p. GCC deletes loops of __builtin_prefetch as free of side
// effects (C++ forward progress lets it), so on x86 the instruction is written out.
inline void prefetch(const char* p) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  asm volatile("prefetcht0 %0" : : "m"(*p));
#else
  (void)p;
#endif
}

// One unit of work: a block of query rows of one head of one batch item.
struct Task {
  const float* q;
  const float* k;
  const float* v;
  float* out;  // the block's first output row
  std::int64_t first_row, rows;
};

// The rows a task will read, prefetched in slices: its query block, and its keys and values when
// they are not the ones already packed.
class RowPrefetch {
 public:
  RowPrefetch() = default;
  RowPrefetch(const Task& task, const float* packed_k, std::int64_t seq, std::int64_t stride, std::int64_t dim)
      : task_(task), seq_(task.k == packed_k ? 0 : seq), stride_(stride), bytes_(dim * std::int64_t{sizeof(float)}) {
    total_ = task.rows + (task.k == task.v ? 1 : 2) * seq_;
  }
  // Slice `slice` of `slices`.
  void issue(std::int64_t slice, std::int64_t slices) const {
    for (std::int64_t i = total_ * slice / slices; i < total_ * (slice + 1) / slices; ++i) {
      const float* row = i < task_.rows          ? task_.q + (task_.first_row + i) * stride_
                         : i < task_.rows + seq_ ? task_.k + (i - task_.rows) * stride_
                                                 : task_.v + (i - task_.rows - seq_) * stride_;
      const char* bytes = reinterpret_cast<const char*>(row);
      for (std::int64_t offset = 0; offset < bytes_; offset += 64) prefetch(bytes + offset);
      prefetch(bytes + bytes_ - 1);
    }
  }

 private:
  Task task_{};
  std::int64_t seq_ = 0, stride_ = 0, bytes_ = 0, total_ = 0;
};

// The fp32 kernels as the driver below calls them.
struct F32Family : Scratch, RegisterTileShape {
  void pack(const float* k, const float* v, std::int64_t stride, std::int64_t seq, std::int64_t keys_padded, std::int64_t dim,
            std::int64_t dim_padded) {
    pack_head(k, v, stride, seq, keys_padded, dim, dim_padded, *this);
  }
  // The block's query rows (q: its first, rows stride apart), then zero rows up to rows_padded.
  void load_queries(const float* q, std::int64_t stride, std::int64_t rows, std::int64_t rows_padded, std::int64_t dim) {
    for (std::int64_t r = 0; r < rows_padded; ++r) {
      float* dst = q_block + r * dim;
      if (r < rows)
        copy_padded(dst, q + r * stride, dim, dim);
      else
        std::fill(dst, dst + dim, 0.0f);
    }
  }
  // scores[kTileRows][keys_vec] of the tile at block row t.
  void score_tile(std::int64_t t, std::int64_t dim, std::int64_t keys_vec, std::int64_t keys_padded) {
    score_rows(q_block + t * dim, dim, k_panels, keys_vec, keys_padded, scores, keys_padded);
  }
  // out = (probabilities in scores) V / sum, the tile's first rows_out rows stored.
  void value_tile(std::int64_t t, std::int64_t keys, std::int64_t dim, std::int64_t dim_padded, std::int64_t keys_padded,
                  std::int64_t rows_out, float* out, std::int64_t out_stride) {
    value_rows(scores, keys_padded, keys, v_rows, dim, dim_padded, inv_sum + t, rows_out, out, out_stride);
  }
};

template <class Family>
inline Family& thread_family() {
  thread_local Family family;
  return family;
}

// The blocking every kernel family shares (the header comment above). Family is per-thread
// working memory with the kernels that fill it: reserve(keys_padded, dim, dim_padded), packed_head,
// pack(k, v, ...), load_queries(...), score_tile(...) into `scores` (fp32, [tile rows][keys_padded]),
// and value_tile(...) from the probabilities the fp32 softmax leaves there, scaled by inv_sum; and
// its shape (RegisterTileShape above, or the AMX family's 32-row tiles).
template <class Family>
inline void run_attention(const float* qkv, std::int64_t batch, std::int64_t seq, int heads, int head_dim, bool causal, float* out,
                          AttentionKind kind) {
  if (batch <= 0 || seq <= 0 || heads <= 0 || head_dim <= 0) return;
  const std::int64_t dim = head_dim, width = std::int64_t{heads} * dim, stride = 3 * width;
  constexpr std::int64_t tile_height = Family::kTileRows, block_height = Family::kBlockRows, key_align = Family::kKeyAlign;
  static_assert(block_height % tile_height == 0 && key_align % kLanes == 0);
  const std::int64_t keys_padded = round_up(seq, key_align), dim_padded = round_up(dim, Family::kDimAlign);
  const std::int64_t blocks = (seq + block_height - 1) / block_height, tasks = batch * heads * blocks;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));

  parallel_region(0, [&](std::int64_t thread, std::int64_t threads) {
    Family& s = thread_family<Family>();
    s.reserve(keys_padded, dim, dim_padded);
    // A static split by hand (the same contiguous runs as schedule(static)) so that each task
    // knows the next one and can prefetch its rows.
    const std::int64_t begin = tasks * thread / threads, end = tasks * (thread + 1) / threads;
    auto locate = [&](std::int64_t task) {
      const std::int64_t block = task % blocks, head = (task / blocks) % heads, b = task / (blocks * heads);
      const float* base = qkv + b * seq * stride + head * dim;
      const float* v = base + 2 * width;
      const bool query_key = kind == AttentionKind::QueryKey;
      const std::int64_t first_row = block * block_height;
      float* block_out = out + (b * seq + first_row) * width + head * dim;
      return Task{query_key ? base : v, query_key ? base + width : v, v, block_out, first_row,
                  std::min<std::int64_t>(block_height, seq - first_row)};
    };
    for (std::int64_t index = begin; index < end; ++index) {
      const Task task = locate(index);
      if (s.packed_head != task.k) {
        s.pack(task.k, task.v, stride, seq, keys_padded, dim, dim_padded);
        s.packed_head = task.k;
      }
      const std::int64_t rows = task.rows, first_row = task.first_row, rows_padded = round_up(rows, tile_height);
      s.load_queries(task.q + first_row * stride, stride, rows, rows_padded, dim);
      // The next task's rows are read from L3 or memory, one 4 KiB page per row at ViT widths:
      // prefetching them a slice per tile hides that behind this task's arithmetic.
      const RowPrefetch next = index + 1 < end ? RowPrefetch(locate(index + 1), task.k, seq, stride, dim) : RowPrefetch();
      const std::int64_t tiles = rows_padded / tile_height;

      for (std::int64_t t = 0; t < rows_padded; t += tile_height) {
        next.issue(t / tile_height, tiles);
        // Keys this tile needs: all of them, or up to its last real row when causal.
        const std::int64_t tile_rows = std::min<std::int64_t>(tile_height, rows - t);
        const std::int64_t keys = causal ? std::min(seq, first_row + t + tile_rows) : seq;
        const std::int64_t keys_vec = round_up(keys, key_align);
        float* scores = s.scores;  // one tile's rows at a time: they stay in L1
        s.score_tile(t, dim, keys_vec, keys_padded);
        for (std::int64_t r = 0; r < tile_height; ++r) {
          float* row = scores + r * keys_padded;
          if (r < tile_rows) {
            s.inv_sum[t + r] = softmax_row(row, causal ? first_row + t + r + 1 : seq, keys, scale);
          } else {  // a padding row: zero weights, never stored
            std::fill(row, row + keys, 0.0f);
            s.inv_sum[t + r] = 0.0f;
          }
        }
        s.value_tile(t, keys, dim, dim_padded, keys_padded, tile_rows, task.out + t * width, width);
      }
    }
  });
}

}  // namespace attention_detail

// out[i] = exp(in[i]) to within a few float ulps (the kernel the attention softmax uses); the
// spans may be the same.
inline void polynomial_exp(std::span<const float> in, std::span<float> out) {
  require(in.size() == out.size(), "polynomial_exp: ", in.size(), " inputs but ", out.size(), " outputs");
  std::size_t i = 0;
#if defined(__AVX512F__)
  for (; i + attention_detail::kLanes <= in.size(); i += attention_detail::kLanes)
    _mm512_storeu_ps(out.data() + i, attention_detail::exp16(_mm512_loadu_ps(in.data() + i)));
#endif
  for (; i < in.size(); ++i) out[i] = attention_detail::exp_scalar(in[i]);
}

// Multi-head attention over packed projections: qkv holds rows [q | k | v] of width 3 * heads *
// head_dim for batch x seq tokens; out receives batch x seq rows of heads * head_dim:
// softmax(q k^T / sqrt(head_dim)) v per head, keys after the query masked when causal, and q = k = v
// when kind is ValueValue; both products in fp32.
inline void cpu_attention_f32(const float* qkv, std::int64_t batch, std::int64_t seq, int heads, int head_dim, bool causal,
                              float* out, AttentionKind kind = AttentionKind::QueryKey) {
  attention_detail::run_attention<attention_detail::F32Family>(qkv, batch, seq, heads, head_dim, causal, out, kind);
}

}  // namespace focuspatch
