#pragma once
// A read-only memory mapping of a whole file. Weight files are used in place from the mapping, so
// loading a model costs page faults, not copies.
#include <sys/mman.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/input_file.hpp"

namespace focuspatch {

class MappedFile {
 public:
  MappedFile() = default;
  explicit MappedFile(std::string path) : path_(std::move(path)) {
    // Refuses FIFOs, devices and directories before anything could block on them (input_file.hpp).
    const RegularFile file = open_regular_file(path_);
    require(file.size <= static_cast<std::uint64_t>(SIZE_MAX), path_, ": ", file.size, " bytes do not fit in memory");
    size_ = static_cast<std::size_t>(file.size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, file.fd.get(), 0);
      if (p == MAP_FAILED) fail(path_, ": cannot map into memory (", std::strerror(errno), ")");
      data_ = static_cast<const std::byte*>(p);
    }
    // The descriptor closes here; the mapping keeps the file alive.
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  MappedFile(MappedFile&& other) noexcept { swap(other); }
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      release();
      swap(other);
    }
    return *this;
  }
  ~MappedFile() { release(); }

  const std::string& path() const { return path_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }
  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void swap(MappedFile& other) noexcept {
    std::swap(path_, other.path_);
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }
  void release() noexcept {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  std::string path_;
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace focuspatch
