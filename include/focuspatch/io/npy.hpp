#pragma once
// NumPy's .npy format (version 1.0) for float32 arrays: raw anomaly maps a user can open with
// numpy.load and nothing else.
#include <cstdint>
#include <span>
#include <string>

#include "focuspatch/core/error.hpp"
#include "focuspatch/core/tensor.hpp"
#include "focuspatch/io/output_file.hpp"

namespace focuspatch {

inline void write_npy(const std::string& path, const Shape& shape, std::span<const float> values) {
  require(element_count(shape) == static_cast<std::int64_t>(values.size()), path, ": ", values.size(), " values for shape ",
          shape_string(shape));
  std::string dims;
  for (std::size_t i = 0; i < shape.size(); ++i) dims += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + length (2) + header, padded with spaces and a newline to 64 bytes.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  const auto len = static_cast<std::uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  static_assert(sizeof(float) == 4);
  OutputFile f(path);
  f.write("\x93NUMPY\x01\x00", 8);
  f.write(len_bytes, 2);
  f.write(header);
  f.write(values.data(), values.size() * sizeof(float));
  f.commit();
}

}  // namespace focuspatch
