#pragma once
// The bf16 linear layer on AMX tiles (tdpbf16ps, Intel Sapphire Rapids and later):
//   C[M, N] (= | +=) epilogue(bf16(A) bf16(W)^T + bias), products summed in fp32.
//
// The tiles are configured at every call (another library in the same thread may have changed
// them) as 16 rows x 64 bytes each, and each 32 x 32 block of C is one amx_product_32x32 per K
// block (amx_tiles.hpp: 2 x 2 C tiles, 2 A tiles, 2 B tiles; per K step of 32, 4 loads and 4
// tdpbf16ps). B tiles are read straight from the weights packed at load (gemm_bf16_packed.hpp: a
// panel's pair rows are 128 bytes, two B tiles side by side); A is rounded to bf16 once per call,
// by all threads, into rows padded to 32 and a multiple of 32 columns that the tiles load as they
// are. Each thread then computes its share of C's columns.
//
// Why the blocking is as it is (measured on a 2-core Xeon with AMX, where a tile load waits on its
// cache misses and a core reads beyond its 2 MiB L2 at ~15 GB/s: STREAM 31 GB/s on both): with the
// whole K in one pass (A and B panels of 32 x 768 bf16, 48 KiB each, both from L2) the products ran
// at ~35 % of the tdpbf16ps peak; with K in blocks of 256 and the A panel (16 KiB) kept in L1 while
// B panels stream from L2, 40-60 %. The partial sums then live in an fp32 block of C (kMc x kNc, in
// L2) across the K blocks, the epilogue (bias, activation, residual: store_tile, the fp32 kernel's)
// runs once after the last, and the C block is large so that A and B are read from beyond L2 as few
// times as it allows.
//
// The kernel is a template over the tile file: AmxTiles (the hardware) in gemm_bf16_amx, the
// software model AmxTilesReference (amx_tiles_reference.hpp) where a test asks for it, so the same
// code is tested on CPUs without AMX. As in llama.cpp's ggml-cpu/amx, Linux must grant the tile
// data state first (arch_prctl, done by CpuFeatures::detect in isa.hpp); the hardware path runs only
// where cpuid and that grant say so.
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
// Blocking (see gemm_thread): K in blocks of kKc (an A panel of 32 x kKc bf16 = 16 KiB, in L1),
// C in blocks of kMc x kNc whose fp32 sums (1 MiB) stay in L2 across the K blocks, as does the B
// block (kKc x kNc bf16, 256 KiB) across the A panels. Chosen with bench_gemm on that Xeon among
// K blocks of 128-768 and C blocks of 128-1024 rows x 256-2048 columns.
inline constexpr std::int64_t kKc = 256, kMc = 512, kNc = 512;
static_assert(kKc % PackedBf16Matrix::kKAlign == 0 && kMc % kBlockRows == 0 && kNc % kBlockColumns == 0);

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

// Part `part` of `parts` of the 32 rows x kKc bf16 A panel at `panel` (rows `stride` elements
// apart), into L1.
inline void prefetch_a_rows(const std::uint16_t* panel, std::int64_t stride, std::int64_t part, std::int64_t parts) {
  constexpr std::int64_t lines_per_row = kKc * 2 / 64;
  const std::int64_t lines = kBlockRows * lines_per_row, begin = lines * part / parts, end = lines * (part + 1) / parts;
  for (std::int64_t l = begin; l < end; ++l)
    _mm_prefetch(reinterpret_cast<const char*>(panel + (l / lines_per_row) * stride) + 64 * (l % lines_per_row), _MM_HINT_T0);
}

// Part `part` of `parts` of a B panel's K block (`steps` x 16 pair rows of 128 bytes), into L2.
inline void prefetch_b_rows(const std::uint16_t* panel, std::int64_t part, std::int64_t parts, std::int64_t steps) {
  const std::int64_t lines = steps * 16 * 2, begin = lines * part / parts, end = lines * (part + 1) / parts;
  for (std::int64_t l = begin; l < end; ++l) _mm_prefetch(reinterpret_cast<const char*>(panel) + 64 * l, _MM_HINT_T1);
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

// The columns [n_begin, n_end) of C from A already in bf16 (packed_a: rows padded to 32, `stride`
// elements each, zero past K).
template <class Tiles>
FOCUSPATCH_TARGET_AVX512BF16 inline void gemm_thread(const std::uint16_t* packed_a, std::int64_t stride, std::int64_t m, const PackedBf16Matrix& w,
                                              const float* bias, float* c, std::int64_t ldc, Epilogue epilogue, bool accumulate,
                                              std::int64_t n_begin, std::int64_t n_end) {
  Tiles::configure(full_amx_tiles());
  const std::int64_t k = w.in();
  thread_local ScratchBuffer sum_buffer;
  float* sums = sum_buffer.get(static_cast<std::size_t>(kMc * kNc), "cpu amx gemm");
  // The products' sums stay in `sums` (fp32, one 32 x 32 block per 4 KiB) across the K blocks;
  // the epilogue runs once, after the last, so C is written once.
  Store s;
  s.add_c = accumulate;
  s.finish = true;
  s.activate_then_add = accumulate && epilogue != Epilogue::None;
  s.epilogue = epilogue;
  constexpr std::int64_t block = kBlockRows * kBlockColumns;
  for (std::int64_t jc = n_begin; jc < n_end; jc += kNc) {
    const std::int64_t nc = std::min(kNc, n_end - jc), panels = (nc + kBlockColumns - 1) / kBlockColumns;
    for (std::int64_t ic = 0; ic < m; ic += kMc) {
      const std::int64_t mc = std::min(kMc, m - ic), row_panels = (mc + kBlockRows - 1) / kBlockRows;
      for (std::int64_t pc = 0; pc == 0 || pc < k; pc += kKc) {
        const std::int64_t steps = (std::min(kKc, k - pc) + kKStep - 1) / kKStep;
        const std::int64_t next_pc = pc + kKc < k ? pc + kKc : -1;
        for (std::int64_t ir = 0; ir < row_panels; ++ir) {
          // This A panel (32 rows x kKc, 16 KiB) stays in L1 while the block's B panels stream
          // past it from L2.
          const std::uint16_t* a_panel = packed_a + (ic + ir * kBlockRows) * stride + pc;
          // Tile loads that miss the caches wait out the latency one tile at a time: the next A
          // panel is fetched into L1 and the next K block's B panels into L2 while this one runs.
          const std::uint16_t* next_a = ir + 1 < row_panels ? a_panel + kBlockRows * stride
                                        : next_pc >= 0      ? packed_a + ic * stride + next_pc
                                                            : nullptr;
          for (std::int64_t p = 0; p < panels; ++p) {
            if (next_a) prefetch_a_rows(next_a, stride, p, panels);
            if (next_pc >= 0) prefetch_b_rows(w.panel(jc / kBlockColumns + p, next_pc / 2), ir, row_panels, steps);
            amx_product_32x32<Tiles>(a_panel, stride * 2, w.panel(jc / kBlockColumns + p, pc / 2), 2 * kBlockColumns * 2, steps,
                                     sums + (ir * panels + p) * block, kBlockColumns * 4, pc > 0);
          }
        }
      }
      for (std::int64_t ir = 0; ir < row_panels; ++ir)
        for (std::int64_t p = 0; p < panels; ++p) {
          const std::int64_t jr = jc + p * kBlockColumns, nr = std::min<std::int64_t>(kBlockColumns, n_end - jr);
          const float* sum = sums + (ir * panels + p) * block;
          s.bias = bias ? bias + jr : nullptr;
          for (std::int64_t half = 0; half < 2; ++half) {
            const std::int64_t row = ir * kBlockRows + 16 * half, rows = std::min<std::int64_t>(16, mc - row);
            if (rows <= 0) break;
            store_rows(std::make_integer_sequence<int, 16>(), rows, sum + 16 * half * kBlockColumns, c + (ic + row) * ldc + jr, ldc, nr, s);
          }
        }
    }
  }
}

}  // namespace gemm_amx_detail

// C[m, w.out()] (row stride ldc) (= | +=) epilogue(bf16(A) W^T + bias) on AMX tiles (or, with
// Tiles = AmxTilesReference, on their software model). A is rounded to bf16 once, by all threads
// together, into a buffer both threads read; then each thread computes its share of C's columns.
template <class Tiles = AmxTiles>
inline void gemm_bf16_amx(const float* a, std::int64_t lda, std::int64_t m, const PackedBf16Matrix& w, const float* bias, float* c,
                          std::int64_t ldc, Epilogue epilogue, bool accumulate) {
  using namespace gemm_amx_detail;
  const std::int64_t k = w.in(), stride = std::max<std::int64_t>((k + kKStep - 1) / kKStep * kKStep, kKStep);
  const std::int64_t groups = (std::max<std::int64_t>(m, 1) + kBlockRows - 1) / kBlockRows;
  thread_local ScratchBuffer a_buffer;
  auto* packed_a = reinterpret_cast<std::uint16_t*>(a_buffer.get(static_cast<std::size_t>(groups * kBlockRows * stride / 2), "cpu amx gemm"));
  auto pack = [&](int t, int count) {
    const std::int64_t g0 = groups * t / count, g1 = groups * (t + 1) / count, row = g0 * kBlockRows;
    const std::int64_t rows = std::clamp<std::int64_t>(m - row, 0, (g1 - g0) * kBlockRows);
    pack_a_rows(a + std::min(row, m) * lda, lda, rows, (g1 - g0) * kBlockRows, 0, k, packed_a + row * stride, stride);
  };
  const int pack_threads = static_cast<int>(std::min<std::int64_t>(m * k < (1 << 16) ? 1 : gemm_detail::thread_count(), groups));
  if (pack_threads <= 1) pack(0, 1);
  else parallel_region(pack_threads, pack);
  gemm_detail::split_columns(m, w.out(), k, kBlockColumns, [&](std::int64_t begin, std::int64_t end) {
    gemm_thread<Tiles>(packed_a, stride, m, w, bias, c, ldc, epilogue, accumulate, begin, end);
  });
}

}  // namespace focuspatch

#endif
