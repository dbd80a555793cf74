#pragma once
// What every CPU GEMM path shares: the stored weight matrix, argument checks, the thread count,
// how threads split the output columns, and what a tile does on its way out (the fused epilogue).
#include <algorithm>
#include <cstdint>

#include "focuspatch/backend/cpu/parallel.hpp"
#include "focuspatch/backend/ops.hpp"
#include "focuspatch/core/dtype.hpp"
#include "focuspatch/core/error.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace focuspatch {

// A weight matrix as stored: out rows of in elements each, contiguous, in fp32, fp16 or bf16.
struct StoredMatrix {
  DType dtype = DType::F32;
  const void* data = nullptr;
  std::int64_t out = 0, in = 0;
};

namespace gemm_detail {

inline int thread_count() {
#ifdef _OPENMP
  return omp_in_parallel() ? 1 : omp_get_max_threads();
#else
  return 1;
#endif
}

inline void check(const StoredMatrix& w, std::int64_t m, std::int64_t lda, std::int64_t ldc) {
  require(w.dtype == DType::F32 || w.dtype == DType::F16 || w.dtype == DType::BF16, "cpu gemm: weights of dtype ",
          dtype_name(w.dtype), " are not supported (f32, f16, bf16 are)");
  require(m >= 0 && w.out >= 0 && w.in >= 0, "cpu gemm: negative size");
  require(lda >= w.in && ldc >= w.out, "cpu gemm: row stride smaller than the row (lda ", lda, " < ", w.in, " or ldc ", ldc,
          " < ", w.out, ")");
}

// What a micro-kernel does with its tile on the way out.
struct Store {
  bool add_c = false;              // C already holds a partial sum or the residual: add to it
  bool finish = false;             // last K block: add the bias and apply the activation
  bool activate_then_add = false;  // residual add of an activated result (one K block only)
  Epilogue epilogue = Epilogue::None;
  const float* bias = nullptr;  // at this tile's first column, or null
};

// Runs body(n_begin, n_end) on each thread over a split of the columns [0, n) in whole panels of
// `panel` columns, so at batch 1 both threads still get half of every layer. Below a few hundred
// thousand multiply-adds the thread hand-off costs more than it saves.
template <class Body>
inline void split_columns(std::int64_t m, std::int64_t n, std::int64_t k, std::int64_t panel, Body&& body) {
  const std::int64_t panels = (n + panel - 1) / panel;
  const double work = static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int wanted = work < 2e5 ? 1 : thread_count();
  const int threads = static_cast<int>(std::min<std::int64_t>(wanted, std::max<std::int64_t>(panels, 1)));
  auto run = [&](int t, int count) {
    const std::int64_t begin = std::min(n, panels * t / count * panel), end = std::min(n, panels * (t + 1) / count * panel);
    if (begin < end) body(begin, end);
  };
  if (threads <= 1) run(0, 1);
  else parallel_region(threads, run);
}

}  // namespace gemm_detail
}  // namespace focuspatch
