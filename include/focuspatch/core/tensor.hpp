#pragma once
// Host-side tensors. TensorView points into memory someone else owns (a mapped weight file, a
// checkpoint archive); FloatTensor owns a contiguous fp32 buffer. Both are row-major.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "focuspatch/core/dtype.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/core/half.hpp"

namespace focuspatch {

using Shape = std::vector<std::int64_t>;

inline std::int64_t element_count(const Shape& shape) {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

inline std::string shape_string(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

struct TensorView {
  DType dtype = DType::F32;
  Shape shape;
  const void* data = nullptr;  // contiguous, row-major, little-endian

  std::int64_t numel() const { return element_count(shape); }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype); }
  std::int64_t dim(std::size_t i) const { return shape.at(i); }
};

// Decodes count elements of a floating-point view into out (fp32). Integer dtypes are refused:
// a weight stored as an integer means the file is not what we think it is.
inline void decode_to_float(DType dtype, const void* src, std::size_t count, float* out) {
  switch (dtype) {
    case DType::F32:
      if (count > 0) std::memcpy(out, src, count * sizeof(float));  // an empty tensor's out may be null
      return;
    case DType::F16: {
      const auto* p = static_cast<const std::uint16_t*>(src);
      for (std::size_t i = 0; i < count; ++i) out[i] = half_to_float(p[i]);
      return;
    }
    case DType::BF16: {
      const auto* p = static_cast<const std::uint16_t*>(src);
      for (std::size_t i = 0; i < count; ++i) out[i] = bf16_to_float(p[i]);
      return;
    }
    case DType::F64: {
      const auto* p = static_cast<const double*>(src);
      for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<float>(p[i]);
      return;
    }
    default:
      fail("cannot decode a ", dtype_name(dtype), " tensor as floating point");
  }
}

class FloatTensor {
 public:
  FloatTensor() = default;
  explicit FloatTensor(Shape shape) : shape_(std::move(shape)), data_(static_cast<std::size_t>(element_count(shape_)), 0.0f) {}
  FloatTensor(Shape shape, std::vector<float> data) : shape_(std::move(shape)), data_(std::move(data)) {
    require(static_cast<std::int64_t>(data_.size()) == element_count(shape_), "FloatTensor: ", data_.size(),
            " values do not fill shape ", shape_string(shape_));
  }

  static FloatTensor from_view(const TensorView& view) {
    FloatTensor t(view.shape);
    decode_to_float(view.dtype, view.data, t.data_.size(), t.data_.data());
    return t;
  }

  const Shape& shape() const { return shape_; }
  std::int64_t dim(std::size_t i) const { return shape_.at(i); }
  std::int64_t numel() const { return static_cast<std::int64_t>(data_.size()); }
  float* data() { return data_.data(); }
  const float* data() const { return data_.data(); }
  std::span<float> values() { return data_; }
  std::span<const float> values() const { return data_; }
  // Row r of the tensor seen as [dim(0), numel/dim(0)].
  std::span<const float> row(std::int64_t r) const {
    const auto cols = static_cast<std::size_t>(numel() / dim(0));
    return {data_.data() + static_cast<std::size_t>(r) * cols, cols};
  }
  TensorView view() const { return {DType::F32, shape_, data_.data()}; }

 private:
  Shape shape_;
  std::vector<float> data_;
};

}  // namespace focuspatch
