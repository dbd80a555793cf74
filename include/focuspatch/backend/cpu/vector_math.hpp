#pragma once
// exp, erf and the two GELU activations over 16 floats at a time, for the linear layer's fused
// epilogue (cpu_gemm.hpp): the scalar std::exp / std::erf there cost as much as a tenth of the GEMM.
// Accuracy goal: relative error about 1e-7 against std::exp / std::erf (tests/test_gemm.cpp measures
// it), infinities and NaN kept, denormal results produced rather than flushed.
//
// Without AVX-512 the array functions below fall back to std::exp / std::erf, so callers and tests
// see one interface on every build.
#include <cmath>
#include <cstddef>

#include "focuspatch/backend/ops.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace focuspatch {

namespace vector_math {

// The activations in scalar form: the reference semantics of the vector code, and the generic path.
// QuickGELU's sigmoid is taken in double: in float, e^{-z} overflows (or, written the other way,
// goes denormal) while the result x sigmoid(z) is still a normal float.
inline float quick_gelu(float x) {
  return static_cast<float>(x / (1.0 + std::exp(-static_cast<double>(1.702f * x))));
}
inline float gelu(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }

#if defined(__AVX512F__)

// min, max, round and scalef through their masked forms with every lane selected: the plain forms
// pass _mm512_undefined_ps() as the merge source, which GCC 12 reports as uninitialized once inlined.
inline constexpr __mmask16 kAllLanes = 0xffff;
inline __m512 min_ps(__m512 a, __m512 b) { return _mm512_mask_min_ps(a, kAllLanes, a, b); }
inline __m512 max_ps(__m512 a, __m512 b) { return _mm512_mask_max_ps(a, kAllLanes, a, b); }
inline __m512 scalef_ps(__m512 a, __m512 b) { return _mm512_mask_scalef_ps(a, kAllLanes, a, b); }
inline __m512 round_ps(__m512 a) {
  return _mm512_mask_roundscale_ps(a, kAllLanes, a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// e^x = p 2^n: x = n ln2 + r with |r| <= ln2 / 2 and p = e^r by its Taylor series to degree 7
// (truncation error below 5e-9 there). The clamp keeps n finite (its low end so far down that even
// FLT_MAX p 2^n underflows, as quick_gelu_ps needs); NaN passes it (max/min return their second
// operand when one is NaN).
inline __m512 exp_mantissa_ps(__m512 x, __m512& n) {
  const __m512 clamped = min_ps(_mm512_set1_ps(89.0f), max_ps(_mm512_set1_ps(-300.0f), x));
  n = round_ps(_mm512_mul_ps(clamped, _mm512_set1_ps(1.44269504088896341f)));
  // ln2 split in two so that n * ln2_hi is exact for |n| < 2^9.
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), clamped);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
}

// vscalefps applies 2^n with one rounding, into the denormal range and up to inf.
inline __m512 exp_ps(__m512 x) {
  __m512 n;
  const __m512 p = exp_mantissa_ps(x, n);
  return scalef_ps(p, n);
}

// erf in two pieces, each a weighted least-squares fit to the relative error made for this code
// (numpy, Chebyshev nodes):
//  |x| < 1:   erf(x) = x P(x^2), P of degree 5;
//  |x| >= 1:  erf(x) = 1 - e^{-x^2} Q(|x|), Q of degree 10 fitting erfc(x) e^{x^2} on [0.875, 4];
//             beyond 4, erf is 1 in float (erfc(4) = 1.5e-8 is below half an ulp of 1).
inline __m512 erf_ps(__m512 x) {
  const __m512 sign_mask = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(0x80000000u)));
  const __m512 ax = _mm512_andnot_ps(sign_mask, x);
  const __m512 t = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-5.6679951863986076e-04f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(4.9274198530177716e-03f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-2.6720893598286478e-02f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.1280578875736066e-01f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-3.7612390676009883e-01f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.1283791471038296e+00f));
  const __m512 small = _mm512_mul_ps(x, p);

  const __m512 z = min_ps(_mm512_set1_ps(4.0f), ax);  // NaN stays NaN, inf becomes 4
  __m512 q = _mm512_set1_ps(1.8456785027876482e-06f);
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-5.2783826423227688e-05f));
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(6.8208447837932824e-04f));
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-5.2783534692696322e-03f));
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(2.7359012293498394e-02f));
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-1.0079166087189621e-01f));
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(2.7383997067195431e-01f));
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-5.6296189599819690e-01f));
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(8.9130896959061101e-01f));
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-1.0905537237854679e+00f));
  q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(9.9403017853163766e-01f));
  const __m512 erfc = _mm512_mul_ps(exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z))), q);
  const __m512 large = _mm512_or_ps(_mm512_sub_ps(_mm512_set1_ps(1.0f), erfc), _mm512_and_ps(sign_mask, x));

  const __mmask16 use_small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(1.0f), _CMP_LT_OQ);
  return _mm512_mask_blend_ps(use_small, large, small);
}

// x * sigmoid(1.702 x) with t = e^{-1.702 |x|} <= 1, so nothing overflows: x / (1 + t) for x >= 0,
// x t / (1 + t) below. There t = p 2^n is applied as x p / (1 + t) scaled by 2^n at the very end,
// so results in the denormal range are rounded once instead of carrying t's lost digits.
inline __m512 quick_gelu_ps(__m512 x) {
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(1.702f));
  const __m512 minus_abs = min_ps(z, _mm512_sub_ps(_mm512_setzero_ps(), z));
  __m512 n;
  const __m512 p = exp_mantissa_ps(minus_abs, n);
  const __m512 one_plus_t = _mm512_add_ps(_mm512_set1_ps(1.0f), scalef_ps(p, n));
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  // x p / 2 cannot overflow (p < 1.5); the 2 goes back in with 2^n.
  const __m512 numerator = _mm512_mask_mul_ps(x, negative, x, _mm512_mul_ps(p, _mm512_set1_ps(0.5f)));
  const __m512 q = _mm512_div_ps(numerator, one_plus_t);
  return _mm512_mask_scalef_ps(q, negative, q, _mm512_add_ps(n, _mm512_set1_ps(1.0f)));
}

inline __m512 gelu_ps(__m512 x) {
  const __m512 e = erf_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

inline __m512 activate_ps(__m512 v, Epilogue epilogue) {
  if (epilogue == Epilogue::QuickGelu) return quick_gelu_ps(v);
  if (epilogue == Epilogue::Gelu) return gelu_ps(v);
  return v;
}

namespace detail {
template <class F, class Scalar>
void apply(const float* in, float* out, std::size_t count, F vector_fn, Scalar) {
  std::size_t i = 0;
  for (; i + 16 <= count; i += 16) _mm512_storeu_ps(out + i, vector_fn(_mm512_loadu_ps(in + i)));
  if (i < count) {
    const __mmask16 m = static_cast<__mmask16>((1u << (count - i)) - 1u);
    _mm512_mask_storeu_ps(out + i, m, vector_fn(_mm512_maskz_loadu_ps(m, in + i)));
  }
}
}  // namespace detail

#define FOCUSPATCH_VECTOR_OR_SCALAR(vector_fn, scalar_fn) \
  detail::apply(in, out, count, [](__m512 v) { return vector_fn(v); }, 0)
#else
namespace detail {
template <class Scalar>
void apply(const float* in, float* out, std::size_t count, Scalar scalar_fn) {
  for (std::size_t i = 0; i < count; ++i) out[i] = scalar_fn(in[i]);
}
}  // namespace detail
#define FOCUSPATCH_VECTOR_OR_SCALAR(vector_fn, scalar_fn) detail::apply(in, out, count, [](float v) { return scalar_fn(v); })
#endif

// out[i] = f(in[i]) for count elements (in == out allowed): the code paths the epilogue uses, over arrays.
inline void exp_array(const float* in, float* out, std::size_t count) {
  FOCUSPATCH_VECTOR_OR_SCALAR(exp_ps, std::exp);
}
inline void erf_array(const float* in, float* out, std::size_t count) {
  FOCUSPATCH_VECTOR_OR_SCALAR(erf_ps, std::erf);
}
inline void quick_gelu_array(const float* in, float* out, std::size_t count) {
  FOCUSPATCH_VECTOR_OR_SCALAR(quick_gelu_ps, quick_gelu);
}
inline void gelu_array(const float* in, float* out, std::size_t count) {
  FOCUSPATCH_VECTOR_OR_SCALAR(gelu_ps, gelu);
}
#undef FOCUSPATCH_VECTOR_OR_SCALAR

}  // namespace vector_math

}  // namespace focuspatch
