// The CPU backend's attention (backend/cpu/attention.hpp) against a naive double-precision
// reference written out here from the definition, softmax(q k^T / sqrt(d)) v per head, and its
// exp kernel against std::exp in double.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "focuspatch/backend/cpu.hpp"
#include "focuspatch/backend/cpu/attention.hpp"
#include "test_paths.hpp"

using namespace focuspatch;

namespace {

// Deterministic values in [-scale, scale).
std::vector<float> filled(std::size_t count, float scale, std::uint32_t seed) {
  std::vector<float> values(count);
  std::uint32_t state = seed * 2654435761u + 12345u;
  for (float& v : values) {
    state = state * 1664525u + 1013904223u;
    v = scale * (static_cast<float>(state >> 8) * (2.0f / 16777216.0f) - 1.0f);
  }
  return values;
}

struct AttentionCase {
  std::int64_t batch, seq;
  int heads, dim;
  bool causal;
  AttentionKind kind;
};

std::string describe(const AttentionCase& s) {
  return "batch " + std::to_string(s.batch) + " seq " + std::to_string(s.seq) + " heads " + std::to_string(s.heads) + " dim " +
         std::to_string(s.dim) + (s.causal ? " causal" : "") + (s.kind == AttentionKind::ValueValue ? " value-value" : "");
}

// The definition, in double, one output row at a time.
std::vector<double> reference(const std::vector<float>& qkv, const AttentionCase& s) {
  const std::int64_t width = std::int64_t{s.heads} * s.dim, stride = 3 * width;
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.dim));
  std::vector<double> out(static_cast<std::size_t>(s.batch * s.seq * width));
  std::vector<double> weights(static_cast<std::size_t>(s.seq));
  for (std::int64_t b = 0; b < s.batch; ++b) {
    for (int h = 0; h < s.heads; ++h) {
      const std::int64_t q_col = (s.kind == AttentionKind::ValueValue ? 2 * width : 0) + std::int64_t{h} * s.dim;
      const std::int64_t k_col = (s.kind == AttentionKind::ValueValue ? 2 * width : width) + std::int64_t{h} * s.dim;
      const std::int64_t v_col = 2 * width + std::int64_t{h} * s.dim;
      for (std::int64_t i = 0; i < s.seq; ++i) {
        const std::int64_t keys = s.causal ? i + 1 : s.seq;
        double top = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < keys; ++j) {
          double dot = 0;
          for (int c = 0; c < s.dim; ++c)
            dot += double{qkv[static_cast<std::size_t>((b * s.seq + i) * stride + q_col + c)]} *
                   double{qkv[static_cast<std::size_t>((b * s.seq + j) * stride + k_col + c)]};
          weights[static_cast<std::size_t>(j)] = dot * scale;
          top = std::max(top, dot * scale);
        }
        double total = 0;
        for (std::int64_t j = 0; j < keys; ++j)
          total += weights[static_cast<std::size_t>(j)] = std::exp(weights[static_cast<std::size_t>(j)] - top);
        for (int c = 0; c < s.dim; ++c) {
          double acc = 0;
          for (std::int64_t j = 0; j < keys; ++j)
            acc += weights[static_cast<std::size_t>(j)] *
                   double{qkv[static_cast<std::size_t>((b * s.seq + j) * stride + v_col + c)]};
          out[static_cast<std::size_t>((b * s.seq + i) * width + std::int64_t{h} * s.dim + c)] = acc / total;
        }
      }
    }
  }
  return out;
}

// Runs the backend's attention on qkv and returns the largest |got - reference|; every output must
// also be finite.
double max_error(const std::vector<float>& qkv, const AttentionCase& s) {
  const std::int64_t width = std::int64_t{s.heads} * s.dim;
  // Garbage in the output buffer must be overwritten, not accumulated into.
  std::vector<float> got(static_cast<std::size_t>(s.batch * s.seq * width), std::numeric_limits<float>::quiet_NaN());
  CpuBackend().attention(qkv.data(), s.batch, s.seq, s.heads, s.dim, s.causal, got.data(), s.kind);
  const std::vector<double> want = reference(qkv, s);
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    worst = std::max(worst, std::fabs(got[i] - want[i]));
  }
  return worst;
}

// Values in [-1, 1): outputs are averages of values, so an absolute bound is a relative one too.
constexpr double kTolerance = 2e-6;

double worst_seen = 0;  // reported after the sweep, to show the margin under kTolerance

void check_shape(const AttentionCase& s, std::uint32_t seed, float input_scale = 1.0f) {
  const std::int64_t width = std::int64_t{s.heads} * s.dim;
  const auto qkv = filled(static_cast<std::size_t>(s.batch * s.seq * 3 * width), input_scale, seed);
  const double error = max_error(qkv, s);
  INFO(describe(s), ": max |error| ", error);
  CHECK(error <= kTolerance * input_scale);
  worst_seen = std::max(worst_seen, error / input_scale);
}

}  // namespace

TEST_CASE("attention matches the double-precision definition over awkward lengths and head sizes") {
  for (int threads : {1, 2}) {
    test::set_threads(threads);
    std::uint32_t seed = 1;
    for (std::int64_t seq : {1, 2, 5, 17, 77, 197, 257, 577}) {
      for (int dim : {24, 32, 40, 64, 80}) {
        for (bool causal : {false, true}) {
          for (AttentionKind kind : {AttentionKind::QueryKey, AttentionKind::ValueValue}) {
            INFO("threads ", threads);
            check_shape({1, seq, seq >= 257 ? 1 : 2, dim, causal, kind}, seed++);
          }
        }
      }
    }
  }
  test::set_threads(2);
  MESSAGE("largest error over the sweep: ", worst_seen);
}

TEST_CASE("attention handles unusual head sizes, several heads and batches") {
  for (int threads : {1, 2}) {
    test::set_threads(threads);
    INFO("threads ", threads);
    std::uint32_t seed = 1000;
    for (int dim : {1, 3, 16, 17, 47, 63, 65, 100, 128, 130})
      for (bool causal : {false, true}) check_shape({1, 29, 3, dim, causal, AttentionKind::QueryKey}, seed++);
    for (bool causal : {false, true}) {
      check_shape({3, 197, 12, 64, causal, AttentionKind::QueryKey}, seed++);
      check_shape({4, 77, 8, 64, causal, AttentionKind::QueryKey}, seed++);
      check_shape({2, 50, 5, 24, causal, AttentionKind::ValueValue}, seed++);
      check_shape({5, 1, 4, 32, causal, AttentionKind::QueryKey}, seed++);
    }
  }
  test::set_threads(2);
}

TEST_CASE("attention with several heads uses each head's own slice of q, k and v") {
  // Heads differ in what they attend to only through their columns: with all heads but one made
  // constant, that head's output alone must match; a mix-up of column offsets would show.
  const AttentionCase s{2, 33, 4, 40, false, AttentionKind::QueryKey};
  auto qkv = filled(static_cast<std::size_t>(s.batch * s.seq * 3 * 4 * 40), 1.0f, 77);
  for (std::size_t r = 0; r < static_cast<std::size_t>(s.batch * s.seq); ++r)
    for (std::size_t c = 0; c < 3 * 160; ++c)
      if ((c % 160) / 40 != 2) qkv[r * 480 + c] = 0.25f;
  CHECK(max_error(qkv, s) <= kTolerance);
}

TEST_CASE("attention stays exact for large scores (softmax stability)") {
  // Integer q and k with d = 64 (scale 1/8, a power of two): every score is an exact float up to
  // 64 * 60 * 60 / 8 = 28800, so the kernel and the double reference see the same logits and the
  // subtraction of the row maximum is all that keeps exp from overflowing.
  for (bool causal : {false, true}) {
    for (AttentionKind kind : {AttentionKind::QueryKey, AttentionKind::ValueValue}) {
      const AttentionCase s{2, 197, 2, 64, causal, kind};
      const std::int64_t width = 128;
      auto qkv = filled(static_cast<std::size_t>(s.batch * s.seq * 3 * width), 60.0f, 5);
      for (std::size_t i = 0; i < qkv.size(); ++i)
        if (kind == AttentionKind::ValueValue || static_cast<std::int64_t>(i) % (3 * width) < 2 * width)
          qkv[i] = std::round(qkv[i]);
      const double error = max_error(qkv, s);
      INFO(describe(s), ": max |error| ", error);
      CHECK(error <= kTolerance * 60.0);
    }
  }
  // Values of magnitude 1e4 in every slot: scores around 1e8, differences between keys far beyond
  // exp's range. Each output must be finite (the row's top key wins outright).
  const AttentionCase s{1, 77, 1, 64, false, AttentionKind::QueryKey};
  const auto qkv = filled(static_cast<std::size_t>(s.seq * 3 * 64), 1e4f, 9);
  std::vector<float> got(static_cast<std::size_t>(s.seq * 64));
  CpuBackend().attention(qkv.data(), s.batch, s.seq, s.heads, s.dim, s.causal, got.data(), s.kind);
  CHECK(std::all_of(got.begin(), got.end(), [](float v) { return std::isfinite(v) && std::fabs(v) <= 1e4f; }));
  const auto want = reference(qkv, s);
  double worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]) / 1e4);
  INFO("max |error| / 1e4: ", worst);
  CHECK(worst <= 1e-3);  // float scores near 1e8 carry rounding of ~4, which can shift a near-tie
}

TEST_CASE("attention recomputes when the same buffer holds new values") {
  // The model reuses one qkv buffer for every layer: nothing derived from an earlier call's
  // contents may be kept.
  const AttentionCase s{1, 197, 12, 64, false, AttentionKind::QueryKey};
  auto qkv = filled(static_cast<std::size_t>(s.seq * 3 * 768), 1.0f, 3);
  CHECK(max_error(qkv, s) <= kTolerance);
  qkv = filled(qkv.size(), 1.0f, 4);
  CHECK(max_error(qkv, s) <= kTolerance);
}

TEST_CASE("attention causal rows ignore later keys") {
  // Changing the last token must leave every earlier output unchanged.
  auto qkv = filled(static_cast<std::size_t>(77 * 3 * 512), 1.0f, 11);
  std::vector<float> first(77 * 512), second(77 * 512);
  CpuBackend().attention(qkv.data(), 1, 77, 8, 64, true, first.data());
  for (std::size_t c = 0; c < 3 * 512; ++c) qkv[76 * 3 * 512 + c] = 100.0f;
  CpuBackend().attention(qkv.data(), 1, 77, 8, 64, true, second.data());
  CHECK(std::equal(first.begin(), first.begin() + 76 * 512, second.begin()));
  CHECK(!std::equal(first.begin() + 76 * 512, first.end(), second.begin() + 76 * 512));
}

TEST_CASE("polynomial_exp agrees with exp to float precision") {
  std::vector<float> x;
  for (double v = -120.0; v <= 90.0; v += 0.0137) x.push_back(static_cast<float>(v));
  for (float v = -1.0f; v <= 1.0f; v += 1.0f / 1024) x.push_back(v);  // near 0, where r is the whole argument
  for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 88.72f, 88.73f, -87.33f, -103.9f, -104.0f, -1e30f, 1e30f}) x.push_back(v);
  x.push_back(7.0f);  // an odd count: the vector path and its scalar tail both run
  std::vector<float> y(x.size());
  polynomial_exp(x, y);
  const double smallest_subnormal = std::ldexp(1.0, -149);
  double worst_relative = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double want = std::exp(double{x[i]});
    INFO("exp(", x[i], ") = ", y[i], ", want ", want);
    if (want > std::numeric_limits<float>::max()) {
      CHECK(std::isinf(y[i]));
    } else if (want >= std::numeric_limits<float>::min()) {
      worst_relative = std::max(worst_relative, std::fabs(y[i] - want) / want);
      CHECK(std::fabs(y[i] - want) <= 1e-6 * want);
    } else {  // subnormal or zero results: an absolute bound of one subnormal step
      CHECK(y[i] >= 0.0f);
      CHECK(std::fabs(y[i] - want) <= smallest_subnormal);
    }
  }
  MESSAGE("worst relative error of polynomial_exp on normal results: ", worst_relative);

  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> special = {0.0f, -inf, inf, nan, -1e30f, -105.0f, 1.0f};
  for (int copies = 0; copies < 3; ++copies) special.insert(special.end(), special.begin(), special.begin() + 7);
  std::vector<float> out(special.size());  // 28: one full vector and a scalar tail of 12
  polynomial_exp(special, out);
  for (std::size_t i = 0; i < special.size(); i += 7) {
    CHECK(out[i] == 1.0f);
    CHECK(out[i + 1] == 0.0f);
    CHECK(std::isinf(out[i + 2]));
    CHECK(std::isnan(out[i + 3]));
    CHECK(out[i + 4] == 0.0f);
    CHECK(out[i + 5] == 0.0f);
    CHECK(std::fabs(out[i + 6] - 2.718281828459045) <= 1e-6 * 2.718281828459045);
  }
  // In place works too; a length mismatch is an error, not a write past the end.
  polynomial_exp(special, special);
  CHECK(special[0] == 1.0f);
  CHECK_THROWS_AS(polynomial_exp(special, std::span<float>(out.data(), 3)), Error);
}

TEST_CASE("attention NaN inputs do not spread to other rows or heads") {
  // A NaN in one key of head 0 makes that head's outputs NaN for the queries that see the key,
  // but head 1 is untouched.
  auto qkv = filled(static_cast<std::size_t>(17 * 3 * 64), 1.0f, 21);
  qkv[10 * 192 + 64] = std::numeric_limits<float>::quiet_NaN();  // token 10, k of head 0
  std::vector<float> got(17 * 64);
  CpuBackend().attention(qkv.data(), 1, 17, 2, 32, true, got.data());
  for (std::size_t i = 0; i < 17; ++i) {
    INFO("token ", i);
    CHECK(std::isnan(got[i * 64]) == (i >= 10));
    CHECK(std::all_of(got.begin() + static_cast<std::ptrdiff_t>(i * 64 + 32),
                      got.begin() + static_cast<std::ptrdiff_t>(i * 64 + 64), [](float v) { return std::isfinite(v); }));
  }
}
