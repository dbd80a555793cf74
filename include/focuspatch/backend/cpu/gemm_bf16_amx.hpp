#pragma once
// The bf16 linear layer on AMX tiles (tdpbf16ps, Intel Sapphire Rapids and later):
//   C[M, N] (= | +=) epilogue(bf16(A) bf16(W)^T + bias), products summed in fp32.
//
// The tiles are configured at every call (another library in the same thread may have changed
// them) as 16 rows x 64 bytes each, and each 32 x 32 block of C is one amx_product_32x32
// (amx_tiles.hpp: 2 x 2 C tiles, 2 A tiles, 2 B tiles; per K step of 32, 4 loads and 4 tdpbf16ps).
// B tiles are read straight from the weights packed at load (gemm_bf16_packed.hpp: a panel's pair
// rows are 128 bytes, two B tiles side by side); A is rounded to bf16 once per call into a
// row-major buffer padded to 32 rows and a multiple of 32 columns. The C block goes through a
// 32 x 32 fp32 scratch into store_tile, the fp32 kernel's fused epilogue.
//
// The kernel is a template over the tile file: AmxTiles (the hardware) in gemm_bf16_amx, the
// software model AmxTilesReference (amx_tiles_reference.hpp) where a test asks for it, so the same
// code is tested on CPUs without AMX. As in llama.cpp's ggml-cpu/amx, Linux must grant the tile
// data state first (arch_prctl, done by CpuFeatures::detect in isa.hpp); the hardware path runs only
// where cpuid and that grant say so. Written on AMD Zen 4 (no AMX): there it ran on the model only.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "focuspatch/backend/cpu/amx_tiles.hpp"
#include "focuspatch/backend/cpu/gemm_bf16_avx512.hpp"

#if defined(__AVX512F__) && defined(FOCUSPATCH_HAVE_AMX_TILES)
#define FOCUSPATCH_HAVE_AMX_KERNEL 1

namespace focuspatch {
namespace gemm_amx_detail {

using gemm_detail::Store;
inline constexpr std::int64_t kBlockRows = 32, kBlockColumns = 32, kKStep = 32;
inline constexpr std::int64_t kKc = 2048, kMc = 128;  // A block: 128 x 2048 bf16 = 512 KiB
static_assert(kKc % PackedBf16Matrix::kKAlign == 0);

// Rows [0, rows) x K range [k0, k0 + kc) of fp32 A -> bf16 rows of `stride` elements (a multiple of
// 32), zero-filled past K and from row `rows` to `padded_rows`.
FOCUSPATCH_TARGET_AVX512BF16 inline void pack_a_rows(const float* a, std::int64_t lda, std::int64_t rows, std::int64_t padded_rows, std::int64_t k0,
                                              std::int64_t kc, std::uint16_t* dst, std::int64_t stride) {
  for (std::int64_t i = 0; i < padded_rows; ++i) {
    std::uint16_t* out = dst + i * stride;
    for (std::int64_t k = 0; k < stride; k += 32) {
      __m512i bits = _mm512_setzero_si512();
      if (i < rows && k < kc) {
        const std::int64_t valid = std::min<std::int64_t>(32, kc - k);
        const __mmask16 lo = gemm_detail::first_lanes(valid), hi = gemm_detail::first_lanes(std::max<std::int64_t>(valid - 16, 0));
        const float* p = a + i * lda + k0 + k;
        bits = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, p + 16), _mm512_maskz_loadu_ps(lo, p)));
      }
      _mm512_storeu_si512(out + k, bits);
    }
  }
}

template <int... rows>
inline void store_rows(std::integer_sequence<int, rows...>, std::int64_t count, const float* tile, float* c, std::int64_t ldc,
                       std::int64_t nr, const Store& s) {
  auto one = [&]<int R>() {
    __m512 acc[R][2];
    for (int i = 0; i < R; ++i) {
      acc[i][0] = _mm512_load_ps(tile + i * kBlockColumns);
      acc[i][1] = _mm512_load_ps(tile + i * kBlockColumns + 16);
    }
    gemm_detail::store_tile<R>(acc, c, ldc, nr, s);
  };
  ((count == rows + 1 ? one.template operator()<rows + 1>() : void()), ...);
}

template <class Tiles>
FOCUSPATCH_TARGET_AVX512BF16 inline void gemm_thread(const float* a, std::int64_t lda, std::int64_t m, const PackedBf16Matrix& w, const float* bias,
                                              float* c, std::int64_t ldc, Epilogue epilogue, bool accumulate, std::int64_t n_begin,
                                              std::int64_t n_end) {
  Tiles::configure(full_amx_tiles());
  const std::int64_t k = w.in();
  const bool one_block = accumulate && epilogue != Epilogue::None;
  const std::int64_t kc_max = one_block ? std::max<std::int64_t>(k, 1) : std::min(kKc, std::max<std::int64_t>(k, 1));
  const std::int64_t stride_max = (kc_max + kKStep - 1) / kKStep * kKStep;
  thread_local ScratchBuffer a_buffer;
  auto* packed_a = reinterpret_cast<std::uint16_t*>(a_buffer.get(static_cast<std::size_t>(kMc * stride_max / 2), "cpu amx gemm"));
  alignas(64) float tile[kBlockRows * kBlockColumns];
  for (std::int64_t pc = 0; pc == 0 || pc < k; pc += kc_max) {
    const std::int64_t kc = std::min(kc_max, k - pc);
    const std::int64_t stride = std::max<std::int64_t>((kc + kKStep - 1) / kKStep * kKStep, kKStep);
    Store s;
    s.add_c = accumulate || pc > 0;
    s.finish = pc + kc >= k;
    s.activate_then_add = one_block;
    s.epilogue = epilogue;
    for (std::int64_t ic = 0; ic < m; ic += kMc) {
      const std::int64_t mc = std::min(kMc, m - ic);
      const std::int64_t padded = (mc + kBlockRows - 1) / kBlockRows * kBlockRows;
      pack_a_rows(a + ic * lda, lda, mc, padded, pc, kc, packed_a, stride);
      for (std::int64_t jr = n_begin; jr < n_end; jr += kBlockColumns) {
        s.bias = bias ? bias + jr : nullptr;
        const std::uint16_t* panel = w.panel(jr / kBlockColumns, pc / 2);
        for (std::int64_t ir = 0; ir < mc; ir += kBlockRows) {
          amx_product_32x32<Tiles>(packed_a + ir * stride, stride * 2, panel, 2 * kBlockColumns * 2, (kc + kKStep - 1) / kKStep, tile,
                                   kBlockColumns * 4);
          const std::int64_t nr = std::min<std::int64_t>(kBlockColumns, n_end - jr);
          for (std::int64_t half = 0; half < 2; ++half) {
            const std::int64_t rows = std::min<std::int64_t>(16, mc - ir - 16 * half);
            if (rows <= 0) break;
            store_rows(std::make_integer_sequence<int, 16>(), rows, tile + 16 * half * kBlockColumns,
                       c + (ic + ir + 16 * half) * ldc + jr, ldc, nr, s);
          }
        }
      }
    }
  }
}

}  // namespace gemm_amx_detail

// C[m, w.out()] (row stride ldc) (= | +=) epilogue(bf16(A) W^T + bias) on AMX tiles (or, with
// Tiles = AmxTilesReference, on their software model).
template <class Tiles = AmxTiles>
inline void gemm_bf16_amx(const float* a, std::int64_t lda, std::int64_t m, const PackedBf16Matrix& w, const float* bias, float* c,
                          std::int64_t ldc, Epilogue epilogue, bool accumulate) {
  gemm_detail::split_columns(m, w.out(), w.in(), gemm_amx_detail::kBlockColumns, [&](std::int64_t begin, std::int64_t end) {
    gemm_amx_detail::gemm_thread<Tiles>(a, lda, m, w, bias, c, ldc, epilogue, accumulate, begin, end);
  });
}

}  // namespace focuspatch

#endif
