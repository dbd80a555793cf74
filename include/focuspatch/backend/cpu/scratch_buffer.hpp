#pragma once
// Working memory for the CPU kernels: 64-byte aligned floats that only grow, so that a kernel
// called again and again with the same shapes allocates on its first call and never after.
#include <cstddef>
#include <cstdlib>
#include <memory>

#include "focuspatch/core/error.hpp"

namespace focuspatch {

class ScratchBuffer {
 public:
  // At least count floats; `what` names the user in the out-of-memory error.
  float* get(std::size_t count, const char* what) {
    if (count > capacity_) {
      const std::size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
      void* p = std::aligned_alloc(64, bytes);
      if (!p) fail(what, ": out of memory allocating ", bytes, " bytes of scratch");
      data_.reset(static_cast<float*>(p));
      capacity_ = count;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data_;
  std::size_t capacity_ = 0;
};

}  // namespace focuspatch
