#pragma once
// Linear layers through cuBLASLt: y[rows, out] (+)= x[rows, in] W^T (+ bias), W stored [out, in]
// as PyTorch's Linear. x and W are 16-bit (tensor cores), accumulation and scaling fp32, y 16-bit
// or fp32. A plan (descriptors and the heuristic's algorithm) is made once per shape and reused.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <map>
#include <memory>
#include <mutex>
#include <tuple>

#include "device_types.cuh"

namespace focuspatch::cuda {

class LinearGemm {
 public:
  LinearGemm();
  ~LinearGemm();
  LinearGemm(const LinearGemm&) = delete;
  LinearGemm& operator=(const LinearGemm&) = delete;

  // Returns false when cuBLASLt had no algorithm fusing the bias for this shape: then the caller
  // adds the bias itself (nothing was added). bias is fp32 for an fp32 y, else 16-bit like y.
  bool run(Precision precision, const void* x, long long rows, const void* w, long long out, long long in, const void* bias,
           bool y_is_f32, void* y, bool accumulate, cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<int, long long, long long, long long, bool, bool, bool>;
  Plan& plan_for(Precision precision, long long rows, long long out, long long in, bool bias, bool y_is_f32, bool accumulate);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  std::size_t workspace_bytes_ = 0;
  std::mutex mutex_;  // plans are shared and their bias pointer is set per call
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace focuspatch::cuda
