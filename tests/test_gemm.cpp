// The fused linear-layer GEMM (backend/cpu/gemm.hpp) and its vector exp/erf (backend/cpu/vector_math.hpp)
// against independent references: a naive double-precision triple loop with the activations
// evaluated in double, and std::exp / std::erf in double. Shapes are chosen to hit every edge of
// the blocking (micro-tile 14 x 32, K blocks of 1024, N blocks of 384, M blocks of 84) and of the
// 16-wide packing (K not a multiple of 16).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "focuspatch/backend/cpu.hpp"
#include "focuspatch/backend/cpu/gemm.hpp"
#include "focuspatch/backend/cpu/vector_math.hpp"
#include "focuspatch/core/half.hpp"
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

double activate(double v, Epilogue e) {
  if (e == Epilogue::QuickGelu) return v / (1.0 + std::exp(-1.702 * v));
  if (e == Epilogue::Gelu) return 0.5 * v * std::erfc(-v / std::sqrt(2.0));
  return v;
}

struct Case {
  std::int64_t m, n, k;
  DType dtype = DType::F32;
  Epilogue epilogue = Epilogue::None;
  bool accumulate = false, bias = true;
};

std::string describe(const Case& c, int threads) {
  return std::to_string(c.m) + "x" + std::to_string(c.k) + "->" + std::to_string(c.n) + " " + std::string(dtype_name(c.dtype)) +
         " epilogue " + std::to_string(static_cast<int>(c.epilogue)) + (c.accumulate ? " accumulate" : "") +
         (c.bias ? " bias" : "") + " threads " + std::to_string(threads);
}

// Runs one case with strided A and C and checks every element, and that C's padding is untouched.
void check_case(const Case& c, int threads, std::uint64_t seed) {
  CAPTURE(describe(c, threads));
  Rng rng{seed};
  const std::int64_t lda = c.k + 3, ldc = c.n + 5;
  std::vector<float> a(static_cast<std::size_t>(c.m * lda + 1));
  for (float& v : a) v = rng.uniform();
  // Weights in their stored form, and the values they decode to (the reference's input).
  std::vector<float> w32(static_cast<std::size_t>(c.n * c.k)), wref(w32.size());
  std::vector<std::uint16_t> w16(w32.size());
  for (std::size_t i = 0; i < w32.size(); ++i) {
    const float v = rng.uniform() * 0.5f;
    if (c.dtype == DType::F16) w16[i] = float_to_half(v), wref[i] = half_to_float(w16[i]);
    else if (c.dtype == DType::BF16) w16[i] = float_to_bf16(v), wref[i] = bf16_to_float(w16[i]);
    else w32[i] = v, wref[i] = v;
  }
  std::vector<float> bias(static_cast<std::size_t>(c.n));
  for (float& v : bias) v = rng.uniform();
  constexpr float sentinel = 12345.0f;
  std::vector<float> out(static_cast<std::size_t>(c.m * ldc), sentinel);
  std::vector<float> before(out.size());
  for (std::int64_t i = 0; i < c.m; ++i)
    for (std::int64_t j = 0; j < c.n; ++j) out[static_cast<std::size_t>(i * ldc + j)] = rng.uniform();
  before = out;

  const StoredMatrix w{c.dtype, c.dtype == DType::F32 ? static_cast<const void*>(w32.data()) : w16.data(), c.n, c.k};
  test::set_threads(threads);
  gemm_linear(a.data(), lda, c.m, w, c.bias ? bias.data() : nullptr, out.data(), ldc, c.epilogue, c.accumulate);
  test::set_threads(2);

  int bad = 0;
  for (std::int64_t i = 0; i < c.m; ++i) {
    for (std::int64_t j = 0; j < ldc; ++j) {
      const auto at = static_cast<std::size_t>(i * ldc + j);
      if (j >= c.n) {
        if (out[at] != sentinel && ++bad <= 3) FAIL_CHECK("padding column " << j << " of row " << i << " was written");
        continue;
      }
      double sum = c.bias ? bias[static_cast<std::size_t>(j)] : 0.0, magnitude = std::abs(sum);
      for (std::int64_t p = 0; p < c.k; ++p) {
        const double term =
            static_cast<double>(a[static_cast<std::size_t>(i * lda + p)]) * wref[static_cast<std::size_t>(j * c.k + p)];
        sum += term;
        magnitude += std::abs(term);
      }
      double expected = activate(sum, c.epilogue);
      if (c.accumulate) {
        expected += before[at];
        magnitude += std::abs(before[at]);
      }
      // fp32 accumulation of k terms: a few ulps of the sum of magnitudes.
      const double tolerance = 2e-6 * magnitude + 1e-6 * std::abs(expected) + 1e-30;
      if (!(std::abs(out[at] - expected) <= tolerance) && ++bad <= 3)
        FAIL_CHECK("C[" << i << "," << j << "] = " << out[at] << ", expected " << expected << " (tolerance " << tolerance << ")");
    }
  }
  CHECK(bad == 0);
}

}  // namespace

TEST_CASE("gemm_linear matches a double-precision reference on awkward shapes") {
  const std::int64_t ms[] = {1, 2, 7, 13, 14, 15, 31, 33};
  const std::int64_t ns[] = {1, 2, 7, 13, 31, 32, 33, 65};
  const std::int64_t ks[] = {1, 2, 7, 13, 16, 17, 31, 33, 65};
  std::uint64_t seed = 1;
  for (auto m : ms)
    for (auto n : ns)
      for (auto k : ks) check_case({m, n, k}, 1, seed++);
}

TEST_CASE("gemm_linear: K split over several blocks, many tiles, both threads") {
  const Case shapes[] = {
      {197, 97, 1030}, {197, 768, 65}, {170, 33, 800}, {65, 400, 200}, {350, 65, 1}, {13, 777, 97}, {31, 65, 2100},
  };
  std::uint64_t seed = 1000;
  for (int threads : {1, 2})
    for (const Case& c : shapes) check_case(c, threads, seed++);
}

TEST_CASE("gemm_linear: every epilogue, with and without bias and accumulation, fp32/fp16/bf16 weights") {
  const Case shapes[] = {{33, 65, 31}, {197, 97, 400}, {40, 70, 1100}};
  std::uint64_t seed = 5000;
  for (int threads : {1, 2})
    for (Case c : shapes)
      for (DType dtype : {DType::F32, DType::F16, DType::BF16})
        for (Epilogue e : {Epilogue::None, Epilogue::QuickGelu, Epilogue::Gelu})
          for (bool accumulate : {false, true})
            for (bool bias : {false, true}) {
              c.dtype = dtype;
              c.epilogue = e;
              c.accumulate = accumulate;
              c.bias = bias;
              check_case(c, threads, seed++);
            }
}

TEST_CASE("gemm_linear: half-precision weights on ragged shapes") {
  std::uint64_t seed = 9000;
  for (DType dtype : {DType::F16, DType::BF16})
    for (std::int64_t k : {1, 7, 17, 33})
      for (std::int64_t n : {1, 31, 33}) check_case({15, n, k, dtype, Epilogue::Gelu, false, true}, 1, seed++);
}

TEST_CASE("gemm_linear: empty K gives the bias and activation; bad arguments are refused") {
  std::vector<float> out(6, 7.0f), bias = {1.0f, -2.0f, 0.5f};
  const float a = 0.0f;
  gemm_linear(&a, 0, 2, StoredMatrix{DType::F32, nullptr, 3, 0}, bias.data(), out.data(), 3, Epilogue::None, true);
  CHECK(out == std::vector<float>{8.0f, 5.0f, 7.5f, 8.0f, 5.0f, 7.5f});
  std::vector<float> w(6);
  CHECK_THROWS_WITH(gemm_linear(&a, 1, 1, StoredMatrix{DType::I32, w.data(), 3, 2}, nullptr, out.data(), 3),
                    doctest::Contains("i32"));
  CHECK_THROWS_WITH(gemm_linear(&a, 1, 1, StoredMatrix{DType::F32, w.data(), 3, 2}, nullptr, out.data(), 3),
                    doctest::Contains("row stride"));
}

TEST_CASE("CpuBackend::linear reads fp16 matrices in place and fp32 ones without a copy") {
  const CpuBackend be;
  const std::vector<std::uint16_t> w16 = {float_to_half(1.0f), float_to_half(-0.5f), float_to_half(0.25f),
                                          float_to_half(2.0f), float_to_half(0.0f), float_to_half(-1.0f)};
  const auto w = be.upload_matrix(TensorView{DType::F16, {2, 3}, w16.data()});
  CHECK(w.stored == w16.data());
  CHECK(w.owner == nullptr);
  const float x[] = {1.0f, 2.0f, 4.0f};
  float y[2] = {10.0f, 20.0f};
  be.linear(x, 1, w, nullptr, y, Epilogue::None, /*accumulate=*/true);
  CHECK(y[0] == 10.0f + 1.0f - 1.0f + 1.0f);
  CHECK(y[1] == 20.0f + 2.0f + 0.0f - 4.0f);
  const std::vector<float> w32 = {1.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f};
  const auto wf = be.upload_matrix(TensorView{DType::F32, {2, 3}, w32.data()});
  CHECK(wf.data == w32.data());
  be.linear(x, 1, wf, nullptr, y);
  CHECK(y[0] == 1.0f);
  CHECK(y[1] == 2.0f);
}

namespace {

// Inputs over the whole float range: a dense grid where the functions change, powers of two out to
// the extremes, denormals, and the special values.
std::vector<float> sweep() {
  std::vector<float> xs;
  for (int i = -120000; i <= 120000; ++i) xs.push_back(static_cast<float>(i) * 1e-3f);
  for (int e = -149; e <= 127; ++e)
    for (float s : {1.0f, -1.0f, 1.37f, -1.37f}) xs.push_back(s * std::ldexp(1.0f, e));
  for (float v : {0.0f, -0.0f, std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(),
                  -std::numeric_limits<float>::max(), 88.72f, 88.73f, -87.3f, -103.9f, -104.5f})
    xs.push_back(v);
  return xs;
}

// |got - want| in units of want's magnitude; tiny results (denormal range) are judged against
// FLT_MIN instead, where a float has fewer than 24 significant bits to give.
double relative_error(float got, double want) {
  const double smallest_normal = std::numeric_limits<float>::min();
  return std::abs(static_cast<double>(got) - want) / std::max(std::abs(want), smallest_normal);
}

template <class Vector, class Reference>
double max_error(const std::vector<float>& xs, Vector vector_fn, Reference reference) {
  std::vector<float> got(xs.size());
  vector_fn(xs.data(), got.data(), xs.size());
  double worst = 0.0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double want = reference(static_cast<double>(xs[i]));
    if (std::isinf(want)) {
      if (!(got[i] == static_cast<float>(want))) FAIL_CHECK("f(" << xs[i] << ") = " << got[i] << ", expected " << want);
      continue;
    }
    if (std::abs(want) > std::numeric_limits<float>::max()) {  // rounds to inf in float
      if (!std::isinf(got[i])) FAIL_CHECK("f(" << xs[i] << ") = " << got[i] << ", expected overflow to inf");
      continue;
    }
    const double e = relative_error(got[i], want);
    if (!(e <= 1e-6)) FAIL_CHECK("f(" << xs[i] << ") = " << got[i] << ", expected " << want);
    if (e > worst) worst = e;
  }
  return worst;
}

}  // namespace

TEST_CASE("vector exp, erf and the GELUs are within 1e-6 of the double-precision functions") {
  const auto xs = sweep();
  const double exp_error = max_error(xs, vector_math::exp_array, [](double x) { return std::exp(x); });
  const double erf_error = max_error(xs, vector_math::erf_array, [](double x) { return std::erf(x); });
  // QuickGELU x / (1 + e^{-z}) in double, with z = 1.702 x rounded to float as the fp32 activation
  // defines it (that rounding alone moves e^{-z} by up to half an ulp of z, 1e-6 at |z| = 16).
  const double quick_error = max_error(xs, vector_math::quick_gelu_array, [](double x) {
    const double e = std::exp(-static_cast<double>(1.702f * static_cast<float>(x)));
    return std::isinf(e) ? (x < 0 ? -0.0 : 0.0) : x / (1.0 + e);
  });
  MESSAGE("max relative error: exp " << exp_error << ", erf " << erf_error << ", quick_gelu " << quick_error);
  // The exact GELU's 1 + erf(x / sqrt 2) cancels for negative x (as it does in PyTorch's float
  // kernel), so its error is bounded relative to |x| there, not to the tiny result.
  std::vector<float> got(xs.size());
  vector_math::gelu_array(xs.data(), got.data(), xs.size());
  double gelu_error = 0.0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double x = xs[i];
    if (std::isnan(x) || std::abs(x) > 1e30) continue;
    const double want = 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    const double e = std::abs(got[i] - want) / std::max({std::abs(want), std::abs(x), 1e-37});
    if (!(e <= 1e-6)) FAIL_CHECK("gelu(" << x << ") = " << got[i] << ", expected " << want);
    gelu_error = std::max(gelu_error, e);
  }
  MESSAGE("max error of gelu relative to max(|gelu(x)|, |x|): " << gelu_error);
}

TEST_CASE("vector exp, erf and the GELUs keep infinities, NaN and underflow") {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> xs = {inf, -inf, nan, -nan, 1000.0f, -1000.0f, -100.0f};
  std::vector<float> e(xs.size()), f(xs.size()), q(xs.size()), g(xs.size());
  vector_math::exp_array(xs.data(), e.data(), xs.size());
  vector_math::erf_array(xs.data(), f.data(), xs.size());
  vector_math::quick_gelu_array(xs.data(), q.data(), xs.size());
  vector_math::gelu_array(xs.data(), g.data(), xs.size());
  CHECK(e[0] == inf);
  CHECK(e[1] == 0.0f);
  CHECK(std::isnan(e[2]));
  CHECK(std::isnan(e[3]));
  CHECK(e[4] == inf);
  CHECK(e[5] == 0.0f);
  CHECK(f[0] == 1.0f);
  CHECK(f[1] == -1.0f);
  CHECK(std::isnan(f[2]));
  CHECK(f[4] == 1.0f);
  CHECK(f[5] == -1.0f);
  CHECK(q[4] == 1000.0f);
  CHECK(q[5] == 0.0f);
  CHECK(std::isnan(q[2]));
  CHECK(g[4] == 1000.0f);
  CHECK(g[5] == 0.0f);
  CHECK(std::isnan(g[2]));
  CHECK(g[0] == inf);
  CHECK(q[0] == inf);
  // Denormal results of exp are produced, not flushed to zero.
  const float x = -100.0f;
  float y = 0.0f;
  vector_math::exp_array(&x, &y, 1);
  CHECK(y > 0.0f);
  CHECK(y == doctest::Approx(static_cast<float>(std::exp(-100.0))).epsilon(1e-3));
}

TEST_CASE("an error inside a kernel's parallel region comes out as an exception after the join") {
  test::set_threads(2);
  std::vector<int> ran(2, 0);
  const std::string msg = test::error_of([&] {
    parallel_region(2, [&](int thread, int threads) {
      ran.at(static_cast<std::size_t>(thread)) = threads;
      if (thread == threads - 1) fail("scratch: out of memory (simulated)");
    });
  });
  CHECK(msg == "scratch: out of memory (simulated)");
#ifdef _OPENMP
  CHECK(ran == std::vector<int>{2, 2});
#endif
  std::vector<int> seen(64, 0);
  const std::string none = test::error_of([&] { parallel_region(0, [&](int thread, int) { seen.at(static_cast<std::size_t>(thread)) = 1; }); });
  CHECK(none.empty());
  CHECK(seen[0] == 1);
}
