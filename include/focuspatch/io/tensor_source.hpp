#pragma once
// Named tensors read from foreign checkpoints (PyTorch archives, safetensors) before conversion.
// A PyTorch tensor is a strided view of a storage that other tensors may share, so a StoredTensor
// keeps the whole storage span plus offset, shape and element strides, exactly as the checkpoint
// describes it; nothing is copied until the converter materializes a tensor as fp32. The
// TensorArchive owns whatever backs the spans (the mapped file, inflated zip entries).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "focuspatch/core/dtype.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/core/half.hpp"
#include "focuspatch/core/tensor.hpp"
#include "focuspatch/io/little_endian.hpp"
#include "focuspatch/io/mapped_file.hpp"

namespace focuspatch {

inline constexpr std::size_t kMaxTensorRank = 32;

struct StoredTensor {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::vector<std::int64_t> strides;   // in elements, one per dimension
  std::int64_t offset = 0;             // in elements, from the start of the storage
  std::span<const std::byte> storage;  // the whole storage, possibly shared with other tensors

  std::int64_t numel() const { return element_count(shape); }
  bool is_floating() const {
    return dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F64;
  }
  // Row-major contiguous: the layout safetensors always has and most PyTorch weights have. Like
  // contiguous_bytes(), meant for tensors already checked by check_tensor_extent (every tensor in
  // a TensorArchive is).
  bool is_contiguous() const {
    std::int64_t expected = 1;
    for (std::size_t d = shape.size(); d-- > 0;) {
      if (shape[d] != 1 && strides[d] != expected) return false;
      // A shape like [0, 2^40, 2^40] holds no elements (so passes the extent check) but the
      // product of its later dimensions does not fit in 64 bits; such a view addresses nothing.
      if (__builtin_mul_overflow(expected, shape[d], &expected)) return numel() == 0;
    }
    return true;
  }
  // The tensor's own bytes when it is contiguous (throws otherwise).
  std::span<const std::byte> contiguous_bytes() const {
    require(is_contiguous(), "tensor '", name, "' is not contiguous");
    const std::size_t size = dtype_size(dtype);
    return storage.subspan(static_cast<std::size_t>(offset) * size, static_cast<std::size_t>(numel()) * size);
  }
};

namespace detail {
inline bool mul_overflows(std::int64_t a, std::int64_t b, std::int64_t& out) { return __builtin_mul_overflow(a, b, &out); }
inline bool add_overflows(std::int64_t a, std::int64_t b, std::int64_t& out) { return __builtin_add_overflow(a, b, &out); }
}  // namespace detail

// Checks that every element the view can address lies inside its storage. `what` names the file.
inline void check_tensor_extent(const StoredTensor& t, std::string_view what) {
  auto bad = [&](auto&&... parts) { fail(what, ": tensor '", t.name, "' ", parts...); };
  if (t.shape.size() > kMaxTensorRank) bad("has rank ", t.shape.size(), " (at most ", kMaxTensorRank, " supported)");
  if (t.strides.size() != t.shape.size()) bad("has ", t.shape.size(), " dimensions but ", t.strides.size(), " strides");
  if (t.offset < 0) bad("has a negative storage offset ", t.offset);
  const auto elem = static_cast<std::int64_t>(dtype_size(t.dtype));
  const auto capacity = static_cast<std::int64_t>(t.storage.size()) / elem;
  std::int64_t count = 1;
  std::int64_t last = t.offset;  // highest element index the view touches
  for (std::size_t d = 0; d < t.shape.size(); ++d) {
    const std::int64_t size = t.shape[d];
    const std::int64_t stride = t.strides[d];
    if (size < 0) bad("has a negative dimension ", size, " in shape ", shape_string(t.shape));
    if (stride < 0) bad("has a negative stride ", stride);
    if (detail::mul_overflows(count, size, count)) bad("has shape ", shape_string(t.shape), " whose element count overflows");
  }
  if (count == 0) {
    if (t.offset > capacity) bad("has storage offset ", t.offset, " beyond its storage of ", capacity, " elements");
    return;
  }
  for (std::size_t d = 0; d < t.shape.size(); ++d) {
    std::int64_t reach = 0;
    if (detail::mul_overflows(t.shape[d] - 1, t.strides[d], reach) || detail::add_overflows(last, reach, last))
      bad("has strides that overflow");
  }
  if (last >= capacity)
    bad("with shape ", shape_string(t.shape), " and offset ", t.offset, " needs ", last + 1, " ", dtype_name(t.dtype),
        " elements but its storage holds ", capacity, "; the file is truncated or corrupt");
}

// A view whose strides revisit storage elements (expand() makes stride 0) may describe far more
// elements than the file holds: a few bytes could then demand terabytes when materialized. Such
// views are materialized up to this many elements; views that do not repeat are bounded by the file.
inline constexpr std::int64_t kMaxRepeatedViewElements = std::int64_t{1} << 24;

namespace detail {
inline void check_materializable(const StoredTensor& t, std::string_view what) {
  const auto capacity = static_cast<std::int64_t>(t.storage.size() / dtype_size(t.dtype));
  if (t.numel() > capacity && t.numel() > kMaxRepeatedViewElements)
    fail(what, ": tensor '", t.name, "' with shape ", shape_string(t.shape), " repeats the ", capacity,
         " elements of its storage into ", t.numel(), "; views that expand storage beyond ", kMaxRepeatedViewElements,
         " elements are not materialized (the file is corrupt or hostile)");
}

// Visits the view's elements in row-major order as byte pointers; the view is already checked.
template <class Fn>
void for_each_element(const StoredTensor& t, Fn&& fn) {
  const std::int64_t n = t.numel();
  if (n == 0) return;
  const std::size_t elem = dtype_size(t.dtype);
  const std::byte* base = t.storage.data();
  const std::size_t rank = t.shape.size();
  if (rank == 0) {
    fn(base + static_cast<std::size_t>(t.offset) * elem);
    return;
  }
  const std::int64_t inner = t.shape[rank - 1];
  const std::int64_t inner_stride = t.strides[rank - 1];
  std::vector<std::int64_t> index(rank - 1, 0);
  std::int64_t row = t.offset;
  for (std::int64_t done = 0; done < n; done += inner) {
    if (inner == 1) fn(base + static_cast<std::size_t>(row) * elem);
    else for (std::int64_t j = 0; j < inner; ++j) fn(base + static_cast<std::size_t>(row + j * inner_stride) * elem);
    for (std::size_t d = rank - 1; d-- > 0;) {
      if (t.shape[d] == 1) continue;  // its stride may be anything; stepping it would only overflow
      row += t.strides[d];
      if (++index[d] < t.shape[d]) break;
      row -= t.strides[d] * t.shape[d];
      index[d] = 0;
    }
  }
}
}  // namespace detail

// The tensor as a contiguous fp32 tensor, whatever its strides. Integer and boolean tensors are
// refused: a weight stored that way means the checkpoint is not what the caller thinks it is.
inline FloatTensor to_float_tensor(const StoredTensor& t, std::string_view what) {
  require(t.is_floating(), what, ": tensor '", t.name, "' has dtype ", dtype_name(t.dtype),
          ", expected a floating-point weight (f32, f16, bf16 or f64)");
  check_tensor_extent(t, what);
  detail::check_materializable(t, what);
  FloatTensor out(t.shape);
  float* dst = out.data();
  switch (t.dtype) {
    case DType::F32: detail::for_each_element(t, [&](const std::byte* p) { *dst++ = load_le<float>(p); }); break;
    case DType::F16:
      detail::for_each_element(t, [&](const std::byte* p) { *dst++ = half_to_float(load_le<std::uint16_t>(p)); });
      break;
    case DType::BF16:
      detail::for_each_element(t, [&](const std::byte* p) { *dst++ = bf16_to_float(load_le<std::uint16_t>(p)); });
      break;
    case DType::F64:
      detail::for_each_element(t, [&](const std::byte* p) { *dst++ = static_cast<float>(load_le<double>(p)); });
      break;
    default: break;
  }
  return out;
}

// The values of an integer or boolean tensor (row-major), for the few non-weight tensors that
// checkpoints carry (position ids, CLIP's context_length).
inline std::vector<std::int64_t> to_int64_values(const StoredTensor& t, std::string_view what) {
  require(!t.is_floating(), what, ": tensor '", t.name, "' has dtype ", dtype_name(t.dtype), ", expected an integer tensor");
  check_tensor_extent(t, what);
  detail::check_materializable(t, what);
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(t.numel()));
  detail::for_each_element(t, [&](const std::byte* p) {
    switch (t.dtype) {
      case DType::I64: out.push_back(load_le<std::int64_t>(p)); break;
      case DType::I32: out.push_back(load_le<std::int32_t>(p)); break;
      case DType::I16: out.push_back(load_le<std::int16_t>(p)); break;
      case DType::I8: out.push_back(load_le<std::int8_t>(p)); break;
      case DType::U8: out.push_back(load_le<std::uint8_t>(p)); break;
      case DType::Bool: out.push_back(load_le<std::uint8_t>(p) != 0 ? 1 : 0); break;
      default: break;
    }
  });
  return out;
}

// The tensors of one checkpoint file plus whatever keeps their bytes alive. Readers build it with
// adopt() and add(); users look tensors up by name.
class TensorArchive {
 public:
  TensorArchive(MappedFile file, std::string format) : path_(file.path()), format_(std::move(format)), file_(std::move(file)) {}
  // For bytes already in memory (tests, embedded data); `name` appears in error messages.
  TensorArchive(std::vector<std::byte> bytes, std::string name, std::string format)
      : path_(std::move(name)), format_(std::move(format)), memory_(std::move(bytes)) {}
  TensorArchive(TensorArchive&&) = default;
  TensorArchive& operator=(TensorArchive&&) = default;
  TensorArchive(const TensorArchive&) = delete;
  TensorArchive& operator=(const TensorArchive&) = delete;

  const std::string& path() const { return path_; }
  // "torch.save", "torchscript" or "safetensors".
  const std::string& format() const { return format_; }
  std::span<const std::byte> file_bytes() const {
    return file_.data() ? file_.bytes() : std::span<const std::byte>(memory_.data(), memory_.size());
  }

  std::size_t size() const { return tensors_.size(); }
  bool empty() const { return tensors_.empty(); }
  // Names in file order.
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<StoredTensor>& tensors() const { return tensors_; }
  bool contains(std::string_view name) const { return find(name) != nullptr; }
  const StoredTensor* find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  const StoredTensor& get(std::string_view name) const {
    const StoredTensor* t = find(name);
    if (!t) fail(path_, ": tensor '", name, "' is missing (the file has ", tensors_.size(), " tensors)");
    return *t;
  }
  FloatTensor load_float(std::string_view name) const { return to_float_tensor(get(name), path_); }
  std::vector<std::int64_t> load_int64(std::string_view name) const { return to_int64_values(get(name), path_); }

  // String metadata in file order: safetensors' __metadata__, or scalar entries found beside the
  // tensors of a PyTorch checkpoint (e.g. "epoch" -> "12").
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  const std::string* find_metadata(std::string_view key) const {
    for (const auto& [k, v] : metadata_)
      if (k == key) return &v;
    return nullptr;
  }

  // ---- building (for readers) -----------------------------------------------------------------
  // Keeps a buffer alive as long as the archive and returns its bytes.
  std::span<const std::byte> adopt(std::unique_ptr<std::string> buffer) {
    owned_.push_back(std::move(buffer));
    const std::string& b = *owned_.back();
    return std::as_bytes(std::span(b.data(), b.size()));
  }
  // Adds a tensor after checking its extent and that its name is new.
  void add(StoredTensor t) {
    check_tensor_extent(t, path_);
    require(!t.name.empty(), path_, ": a tensor has an empty name");
    require(index_.emplace(t.name, tensors_.size()).second, path_, ": tensor name '", t.name, "' appears twice");
    names_.push_back(t.name);
    tensors_.push_back(std::move(t));
  }
  void add_metadata(std::string key, std::string value) { metadata_.emplace_back(std::move(key), std::move(value)); }
  void set_format(std::string format) { format_ = std::move(format); }

 private:
  std::string path_;
  std::string format_;
  MappedFile file_;
  std::vector<std::byte> memory_;
  std::vector<std::unique_ptr<std::string>> owned_;
  std::vector<StoredTensor> tensors_;
  std::vector<std::string> names_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

}  // namespace focuspatch
