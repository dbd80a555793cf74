// The CUDA attention kernels (kernels/attention.cu) against the CPU backend's cpu_attention, which
// test_attention checks against the definition in double. Inputs are rounded to fp16 or bf16 here,
// and the CPU reference gets exactly those rounded values as floats, so the only differences left are
// the GPU's own roundings (bounded below, next to the tolerance).
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "attention.cuh"
#include "cuda_check.cuh"
#include "cuda_test_support.hpp"
#include "focuspatch/backend/cpu/attention.hpp"
#include "focuspatch/backend/ops.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/core/half.hpp"

using namespace focuspatch;

namespace {

enum class Format { F16, BF16 };

struct Case {
  Format format;
  long long batch, seq;
  int heads, head_dim;
  bool causal;
  AttentionKind kind;
  float magnitude = 1.5f;      // q and k (value-value: v) uniform in [-magnitude, magnitude); v otherwise in [-1, 1)
  std::size_t misalign = 0;    // elements qkv and out are moved off cudaMalloc's alignment
};

std::string describe(const Case& c) {
  return std::string(c.format == Format::F16 ? "fp16" : "bf16") + " batch " + std::to_string(c.batch) + " seq " +
         std::to_string(c.seq) + " heads " + std::to_string(c.heads) + " head_dim " + std::to_string(c.head_dim) +
         (c.causal ? " causal" : "") + (c.kind == AttentionKind::ValueValue ? " value-value" : "") + " magnitude " +
         std::to_string(c.magnitude) + (c.misalign ? " misaligned by " + std::to_string(c.misalign) : "");
}

std::uint16_t to_bits(float x, Format format) { return format == Format::F16 ? float_to_half(x) : float_to_bf16(x); }
float from_bits(std::uint16_t bits, Format format) { return format == Format::F16 ? half_to_float(bits) : bf16_to_float(bits); }

class DeviceBuffer {
 public:
  explicit DeviceBuffer(std::size_t elements) { cuda::check(cudaMalloc(&data_, elements * sizeof(std::uint16_t)), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(data_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::uint16_t* get() const { return static_cast<std::uint16_t*>(data_); }

 private:
  void* data_ = nullptr;
};

void run_attention(Format format, const std::uint16_t* qkv, const Case& c, std::uint16_t* out) {
  const bool value_value = c.kind == AttentionKind::ValueValue;
  if (format == Format::F16)
    cuda::attention(reinterpret_cast<const __half*>(qkv), c.batch, c.seq, c.heads, c.head_dim, c.causal, value_value,
                    reinterpret_cast<__half*>(out), nullptr);
  else
    cuda::attention(reinterpret_cast<const __nv_bfloat16*>(qkv), c.batch, c.seq, c.heads, c.head_dim, c.causal, value_value,
                    reinterpret_cast<__nv_bfloat16*>(out), nullptr);
}

constexpr std::uint16_t kSentinel = 0xffff;  // a NaN in both fp16 and bf16: an output never written stays NaN
constexpr std::size_t kFrontGuard = 64;      // sentinel elements before the output ...
constexpr long long kBackGuardRows = 64;     // ... and rows after it: a padded query row of the last tile lands here

void check_case(const Case& c) {
  INFO(describe(c));
  const long long width = static_cast<long long>(c.heads) * c.head_dim, rows = c.batch * c.seq;
  const std::size_t qkv_count = static_cast<std::size_t>(rows * 3 * width), out_count = static_cast<std::size_t>(rows * width);

  // Inputs: random, rounded to the 16-bit format; `values` holds the rounded numbers as floats.
  std::mt19937 rng(static_cast<std::uint32_t>(c.seq * 7919 + c.head_dim * 131 + c.heads * 17 + c.batch * 3 + (c.causal ? 1 : 0)));
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::vector<std::uint16_t> bits(qkv_count);
  std::vector<float> values(qkv_count);
  float max_value = 0.0f;  // largest |v| among the rows attention averages
  for (std::size_t i = 0; i < qkv_count; ++i) {
    const long long part = static_cast<long long>(i) % (3 * width) / width;  // 0 q, 1 k, 2 v
    const float scale = part == 2 && c.kind == AttentionKind::QueryKey ? 1.0f : c.magnitude;
    bits[i] = to_bits(scale * unit(rng), c.format);
    values[i] = from_bits(bits[i], c.format);
    if (part == 2) max_value = std::max(max_value, std::abs(values[i]));
  }
  std::vector<float> expected(out_count);
  cpu_attention(values.data(), c.batch, c.seq, c.heads, c.head_dim, c.causal, expected.data(), c.kind);

  const std::size_t back_guard = static_cast<std::size_t>(kBackGuardRows * width);
  const std::size_t out_total = kFrontGuard + c.misalign + out_count + back_guard;
  DeviceBuffer qkv_device(c.misalign + qkv_count), out_device(out_total);
  cuda::check(cudaMemcpy(qkv_device.get() + c.misalign, bits.data(), qkv_count * sizeof(std::uint16_t), cudaMemcpyHostToDevice),
              "cudaMemcpy qkv");
  cuda::check(cudaMemset(out_device.get(), 0xff, out_total * sizeof(std::uint16_t)), "cudaMemset out");
  const std::size_t out_first = kFrontGuard + c.misalign;
  run_attention(c.format, qkv_device.get() + c.misalign, c, out_device.get() + out_first);
  cuda::check(cudaDeviceSynchronize(), "attention kernels");
  std::vector<std::uint16_t> got(out_total);
  cuda::check(cudaMemcpy(got.data(), out_device.get(), out_total * sizeof(std::uint16_t), cudaMemcpyDeviceToHost),
              "cudaMemcpy out");

  std::size_t guards_overwritten = 0;
  for (std::size_t i = 0; i < out_first; ++i) guards_overwritten += got[i] != kSentinel;
  for (std::size_t i = out_first + out_count; i < out_total; ++i) guards_overwritten += got[i] != kSentinel;
  CHECK(guards_overwritten == 0);

  // Tolerance. Let u be the unit roundoff of the format (2^-11 fp16, 2^-8 bf16) and V = max |v|.
  //  - Scores: products of 16-bit numbers are exact in fp32 and summed in fp32 (tensor cores or FMA),
  //    relative error ~1e-6 of sum |q_d k_d| / sqrt(d) <= ~50 here: <= 1e-4 in the exponent, so
  //    weights are off by <= 1e-4 relative, moving the output by <= 2e-4 V.
  //  - The tiled kernel feeds P V weights p_j rounded to the format, p_j (1 + e_j), |e_j| <= u, and
  //    divides by their own sum: the output moves by <= u sum_j p_j |v_j - o| / sum_j p_j <= 2u V
  //    (fp16 weights under 2^-14 are subnormal, absolute error 2^-25 each: negligible).
  //  - The output is rounded to the format: <= u |o| <= u V.
  // Sum <= 3u V + 2e-4 V; we allow 4u V (2e-3 V fp16, 1.6e-2 V bf16). An indexing or masking bug
  // (a key dropped or leaked, a wrong head or row) moves outputs by ~1/seq V or more; the RMS check
  // below (errors are independent roundings, typically ~u/3 V) catches smaller systematic shifts.
  const double u = c.format == Format::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
  const double tolerance = 4.0 * u * max_value, rms_tolerance = u * max_value;
  std::size_t not_finite = 0, worst = 0;
  double max_error = 0.0, sum_squares = 0.0;
  for (std::size_t i = 0; i < out_count; ++i) {
    const double value = from_bits(got[out_first + i], c.format);
    if (!std::isfinite(value)) {
      ++not_finite;
      continue;
    }
    const double error = std::abs(value - static_cast<double>(expected[i]));
    sum_squares += error * error;
    if (error > max_error) {
      max_error = error;
      worst = i;
    }
  }
  const double rms = std::sqrt(sum_squares / static_cast<double>(out_count));
  const std::size_t worst_row = worst / static_cast<std::size_t>(width), worst_column = worst % static_cast<std::size_t>(width);
  INFO("worst at token row " << worst_row << " column " << worst_column << " (head " << worst_column / c.head_dim
                             << "): got " << from_bits(got[out_first + worst], c.format) << ", expected " << expected[worst]);
  CHECK(not_finite == 0);
  CHECK(max_error <= tolerance);
  CHECK(rms <= rms_tolerance);
}

void check_cases(const std::vector<Case>& cases) {
  for (const Case& c : cases) check_case(c);
}

constexpr Format F16 = Format::F16, BF16 = Format::BF16;
constexpr AttentionKind QK = AttentionKind::QueryKey, VV = AttentionKind::ValueValue;

}  // namespace

// head_dim 64 (CLIP ViT-B/L): every length class around the 64-row tiles, one tile or several,
// whole or partial, and the lengths CLIP uses.
TEST_CASE("cuda attention, tiled kernel: sequence lengths around the tile size") {
  FOCUSPATCH_REQUIRE_GPU();
  check_cases({
      {F16, 1, 1, 12, 64, false, QK},   {F16, 1, 2, 12, 64, false, QK},   {F16, 1, 15, 12, 64, false, QK},
      {F16, 1, 16, 12, 64, false, QK},  {F16, 1, 17, 12, 64, false, QK},  {F16, 3, 50, 12, 64, false, QK},
      {F16, 1, 64, 12, 64, false, QK},  {F16, 2, 65, 12, 64, false, QK},  {F16, 1, 197, 12, 64, false, QK},
      {F16, 1, 257, 12, 64, false, QK}, {F16, 1, 577, 16, 64, false, QK}, {F16, 1, 1025, 2, 64, false, QK},
      {BF16, 1, 197, 12, 64, false, QK}, {BF16, 3, 50, 12, 64, false, QK}, {BF16, 1, 577, 4, 64, false, QK},
  });
}

// Causal (the text encoder: 77 tokens, 8 heads of 64): key 0 is always visible, rows of a query tile
// see different numbers of keys, and the key loop stops at the tile of the block's last query.
TEST_CASE("cuda attention, tiled kernel: causal mask") {
  FOCUSPATCH_REQUIRE_GPU();
  check_cases({
      {F16, 3, 1, 8, 64, true, QK},    {F16, 3, 2, 8, 64, true, QK},    {F16, 3, 17, 8, 64, true, QK},
      {F16, 3, 64, 8, 64, true, QK},   {F16, 3, 65, 8, 64, true, QK},   {F16, 3, 77, 8, 64, true, QK},
      {F16, 2, 130, 4, 64, true, QK},  {BF16, 3, 77, 8, 64, true, QK},  {BF16, 1, 1025, 2, 64, true, QK},
      {F16, 1, 77, 12, 128, true, QK}, {BF16, 2, 65, 2, 80, true, QK},  {F16, 3, 50, 1, 16, true, QK},
  });
}

// CLIP Surgery's value-value attention: q = k = v = the v part, whose scores peak on the diagonal.
TEST_CASE("cuda attention, tiled kernel: value-value attention") {
  FOCUSPATCH_REQUIRE_GPU();
  check_cases({
      {F16, 1, 197, 12, 64, false, VV},  {BF16, 1, 257, 12, 64, false, VV}, {F16, 2, 17, 4, 80, false, VV},
      {BF16, 1, 577, 4, 64, false, VV},  {F16, 3, 50, 2, 64, true, VV},     {BF16, 1, 65, 2, 128, false, VV},
  });
}

// Every head size the tiled kernel is instantiated for (80: ViT-H), each with a partial last tile.
TEST_CASE("cuda attention, tiled kernel: every head size") {
  FOCUSPATCH_REQUIRE_GPU();
  check_cases({
      {F16, 3, 50, 1, 16, false, QK},   {BF16, 1, 16, 3, 16, false, QK},  {F16, 1, 65, 2, 32, false, QK},
      {BF16, 1, 65, 2, 48, true, QK},   {F16, 1, 257, 16, 80, false, QK}, {BF16, 2, 65, 2, 80, false, QK},
      {F16, 1, 65, 2, 96, true, QK},    {BF16, 1, 65, 2, 112, false, QK}, {F16, 1, 577, 2, 128, false, QK},
      {BF16, 3, 100, 4, 128, true, QK},
  });
}

// Scores up to about +-30 and beyond: the running maximum changes from key tile to key tile, so
// the accumulated output and sum are rescaled many times, and most weights underflow.
TEST_CASE("cuda attention: large scores exercise the online softmax rescaling") {
  FOCUSPATCH_REQUIRE_GPU();
  check_cases({
      {F16, 2, 257, 4, 64, false, QK, 5.0f},  {BF16, 2, 257, 4, 64, false, QK, 5.0f}, {F16, 2, 130, 4, 64, true, QK, 5.0f},
      {F16, 1, 197, 4, 64, false, VV, 3.0f},  {BF16, 1, 197, 4, 64, false, VV, 3.0f}, {F16, 1, 77, 2, 128, false, QK, 5.0f},
      {F16, 1, 129, 2, 40, false, QK, 5.0f},  {BF16, 1, 100, 2, 200, true, QK, 4.0f},
  });
}

// Head sizes the tiled kernel does not take (not a multiple of 16, or above 128) run on the generic
// kernel, up to the largest accepted, 256.
TEST_CASE("cuda attention, generic kernel: other head sizes") {
  FOCUSPATCH_REQUIRE_GPU();
  check_cases({
      {F16, 2, 17, 3, 1, false, QK},    {BF16, 2, 17, 3, 8, true, QK},    {F16, 2, 77, 2, 24, true, QK},
      {BF16, 3, 50, 2, 24, false, VV},  {F16, 1, 65, 2, 40, false, QK},   {F16, 1, 197, 2, 100, false, QK},
      {BF16, 1, 77, 2, 100, true, QK},  {F16, 1, 65, 2, 144, false, QK},  {BF16, 1, 33, 2, 200, false, VV},
      {F16, 1, 65, 1, 256, true, QK},   {BF16, 1, 1, 2, 256, false, QK},
  });
}

// The tiled kernel loads 16 bytes at a time, so qkv off 16-byte alignment must take the generic
// kernel; out may have any (element) alignment on either.
TEST_CASE("cuda attention: unaligned buffers") {
  FOCUSPATCH_REQUIRE_GPU();
  check_cases({
      {F16, 2, 65, 2, 64, false, QK, 1.5f, 1},  {BF16, 1, 77, 2, 16, true, QK, 1.5f, 3},
      {F16, 1, 65, 2, 128, false, VV, 1.5f, 8},  // 16 bytes: still aligned, tiled
  });
}

// The checks come before any CUDA call, so these run (and must throw) on machines without a GPU too.
TEST_CASE("cuda attention: bad arguments are refused before any CUDA call") {
  // Host memory standing in for device buffers: every call below must throw before using them.
  // Shape 1 x 4 tokens x 1 head x 64: qkv is 768 elements from buffer[0], out 256 from buffer[3072].
  std::vector<std::uint16_t> storage(4096);
  __half* buffer = reinterpret_cast<__half*>(storage.data());
  const __half* qkv = buffer;
  __half* out = buffer + 3072;
  auto call = [&](long long batch, long long seq, int heads, int head_dim, const __half* in, __half* result) {
    cuda::attention(in, batch, seq, heads, head_dim, false, false, result, nullptr);
  };
  CHECK_THROWS_WITH_AS(call(1, 4, 1, 0, qkv, out), doctest::Contains("head_dim 0 is outside"), Error);
  CHECK_THROWS_WITH_AS(call(1, 4, 1, 257, qkv, out), doctest::Contains("head_dim 257 is outside"), Error);
  CHECK_THROWS_WITH_AS(call(1, 4, 1, 300, qkv, out), doctest::Contains("head_dim 300 is outside"), Error);
  CHECK_THROWS_WITH_AS(call(1, 4, 1, -5, qkv, out), doctest::Contains("head_dim -5 is outside"), Error);
  CHECK_THROWS_WITH_AS(call(1, 4, 0, 64, qkv, out), doctest::Contains("heads is 0"), Error);
  CHECK_THROWS_WITH_AS(call(-1, 4, 1, 64, qkv, out), doctest::Contains("must not be negative"), Error);
  CHECK_THROWS_WITH_AS(call(1, -4, 1, 64, qkv, out), doctest::Contains("must not be negative"), Error);
  CHECK_THROWS_WITH_AS(call(1, 4, 1, 64, nullptr, out), doctest::Contains("null pointer"), Error);
  CHECK_THROWS_WITH_AS(call(1, 4, 1, 64, qkv, nullptr), doctest::Contains("null pointer"), Error);
  // An output starting inside the 768 input elements, or inputs starting inside the 256 outputs.
  CHECK_THROWS_WITH_AS(call(1, 4, 1, 64, qkv, buffer + 700), doctest::Contains("overlaps"), Error);
  CHECK_THROWS_WITH_AS(call(1, 4, 1, 64, buffer + 100, buffer), doctest::Contains("overlaps"), Error);
  CHECK_THROWS_WITH_AS(call(1LL << 40, 1LL << 20, 16, 64, qkv, out), doctest::Contains("too large"), Error);
  // Nothing to compute: returns without touching the (here null) buffers or the GPU.
  CHECK_NOTHROW(call(0, 4, 1, 64, nullptr, nullptr));
  CHECK_NOTHROW(call(2, 0, 1, 64, nullptr, nullptr));
}
