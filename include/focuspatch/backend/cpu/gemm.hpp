#pragma once
// The CPU backend's linear layers: the one place that picks a kernel.
//
//   fp32 products:  gemm_f32_avx512.hpp (AVX-512 FMA)  | gemm_f32_portable.hpp (Eigen)
//   bf16 products:  gemm_bf16_amx.hpp (AMX tiles)      | gemm_bf16_avx512.hpp (vdpbf16ps)
//   reference:      gemm_reference.hpp (double sums; bf16-rounded operands for the bf16 paths)
//
// A CpuBackend fixes its path once (from its precision and the process's ISA, backend/cpu/isa.hpp)
// and packs its bf16 weights for it at load; the calls below then only run.
#include <cstdint>

#include "focuspatch/backend/cpu/gemm_bf16_amx.hpp"
#include "focuspatch/backend/cpu/gemm_bf16_avx512.hpp"
#include "focuspatch/backend/cpu/gemm_bf16_packed.hpp"
#include "focuspatch/backend/cpu/gemm_common.hpp"
#include "focuspatch/backend/cpu/gemm_f32_avx512.hpp"
#include "focuspatch/backend/cpu/gemm_f32_portable.hpp"
#include "focuspatch/backend/cpu/isa.hpp"

namespace focuspatch {

// What the matrix products of a CPU backend compute in.
enum class CpuPrecision { F32, BF16 };

inline constexpr const char* cpu_precision_name(CpuPrecision p) { return p == CpuPrecision::BF16 ? "bf16" : "f32"; }

// Which kernel family the linear layers run.
enum class CpuLinearPath { F32Portable, F32Avx512, Bf16Avx512, Bf16Amx };

inline constexpr bool is_bf16(CpuLinearPath path) { return path == CpuLinearPath::Bf16Avx512 || path == CpuLinearPath::Bf16Amx; }

// "bf16 amx", "bf16 avx512bf16", "f32 avx512", "f32 portable": what the logs and JSON report.
inline constexpr const char* cpu_linear_path_name(CpuLinearPath path) {
  switch (path) {
    case CpuLinearPath::Bf16Amx: return "bf16 amx";
    case CpuLinearPath::Bf16Avx512: return "bf16 avx512bf16";
    case CpuLinearPath::F32Avx512: return "f32 avx512";
    default: return "f32 portable";
  }
}

// bf16 runs on AMX where the ISA allows, else on AVX512-BF16, else falls back to fp32.
inline CpuLinearPath choose_linear_path(CpuPrecision precision, CpuIsa isa) {
  if (precision == CpuPrecision::BF16 && isa >= CpuIsa::Amx) return CpuLinearPath::Bf16Amx;
  if (precision == CpuPrecision::BF16 && isa >= CpuIsa::Avx512Bf16) return CpuLinearPath::Bf16Avx512;
  return isa >= CpuIsa::Avx512 ? CpuLinearPath::F32Avx512 : CpuLinearPath::F32Portable;
}

// C[m, w.out] (row stride ldc) (= | += when accumulate) epilogue(A[m, w.in] (row stride lda) W^T + bias)
// in fp32. bias has w.out elements or is null. With accumulate the activation applies to the
// product only: C += act(A W^T + b). Uses omp_get_max_threads() threads (one when called inside a
// parallel region). isa: Avx512 or above runs the AVX-512 kernel (where compiled in), else Eigen.
inline void gemm_linear(const float* a, std::int64_t lda, std::int64_t m, const StoredMatrix& w, const float* bias, float* c,
                        std::int64_t ldc, Epilogue epilogue = Epilogue::None, bool accumulate = false,
                        [[maybe_unused]] CpuIsa isa = cpu_isa()) {
  gemm_detail::check(w, m, lda, ldc);
  if (m == 0 || w.out == 0) return;
#if defined(__AVX512F__)
  if (isa >= CpuIsa::Avx512) {
    switch (w.dtype) {
      case DType::F16: return gemm_detail::gemm_f32_avx512<DType::F16>(a, lda, m, w, bias, c, ldc, epilogue, accumulate);
      case DType::BF16: return gemm_detail::gemm_f32_avx512<DType::BF16>(a, lda, m, w, bias, c, ldc, epilogue, accumulate);
      default: return gemm_detail::gemm_f32_avx512<DType::F32>(a, lda, m, w, bias, c, ldc, epilogue, accumulate);
    }
  }
#endif
  gemm_detail::gemm_portable(a, lda, m, w, bias, c, ldc, epilogue, accumulate);
}

// The same with bf16 operands and fp32 sums, W packed at load; path is Bf16Avx512 or Bf16Amx and
// must be one the process's ISA allows (CpuBackend checks this once, at construction).
inline void gemm_linear_bf16([[maybe_unused]] const float* a, std::int64_t lda, std::int64_t m, const PackedBf16Matrix& w,
                             [[maybe_unused]] const float* bias, [[maybe_unused]] float* c, std::int64_t ldc,
                             [[maybe_unused]] Epilogue epilogue, [[maybe_unused]] bool accumulate, CpuLinearPath path) {
  require(m >= 0 && lda >= w.in() && ldc >= w.out(), "cpu bf16 gemm: row stride smaller than the row (lda ", lda, " < ", w.in(),
          " or ldc ", ldc, " < ", w.out(), ")");
  if (m == 0 || w.out() == 0) return;
#if defined(FOCUSPATCH_HAVE_AMX_KERNEL)
  if (path == CpuLinearPath::Bf16Amx) return gemm_bf16_amx(a, lda, m, w, bias, c, ldc, epilogue, accumulate);
#endif
#if defined(__AVX512F__)
  if (path == CpuLinearPath::Bf16Avx512) return gemm_bf16_avx512(a, lda, m, w, bias, c, ldc, epilogue, accumulate);
#endif
  fail("cpu bf16 gemm: path '", cpu_linear_path_name(path), "' is not compiled into this build");
}

}  // namespace focuspatch
