#pragma once
// Unaligned little-endian loads from byte buffers. Checkpoint formats (zip, pickle, safetensors)
// store integers little-endian at arbitrary offsets; memcpy is the portable unaligned load and
// compiles to a single move. Callers check bounds before loading.
#include <bit>
#include <cstddef>
#include <cstring>
#include <type_traits>

namespace focuspatch {

static_assert(std::endian::native == std::endian::little,
              "focuspatch reads little-endian checkpoint formats in place and needs a little-endian host");

template <class T>
  requires std::is_trivially_copyable_v<T>
T load_le(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace focuspatch
