#pragma once
// --device cpu|cuda[:N] and --precision (f32|bf16 on the CPU, f16|bf16 on a GPU), shared by the
// programs that run the model: picks the backend and runs the program's body with it. Programs
// built without CUDA still accept the option and say why cuda is unavailable.
#include <string>

#include "common/cli_args.hpp"
#include "focuspatch/backend/cpu.hpp"
#include "focuspatch/io/weight_file.hpp"
#if defined(FOCUSPATCH_HAVE_CUDA)
#include "focuspatch/backend/cuda.hpp"
#endif

namespace focuspatch::cli {

inline constexpr const char* kDeviceOption = "device";
inline constexpr const char* kPrecisionOption = "precision";

// What ran, for logs and JSON: "cpu bf16 avx512bf16", "cpu f32 avx512", "cuda <name> bf16", ...
inline std::string device_description(const CpuBackend& backend) { return backend.description(); }
#if defined(FOCUSPATCH_HAVE_CUDA)
inline std::string device_description(const CudaBackend& backend) {
  return std::string("cuda ") + backend.device_name() + (backend.precision() == CudaPrecision::BF16 ? " bf16" : " f16");
}
#endif

// Calls run(backend) with the backend the options name; returns what run returns. weights: the
// .fpw file the program will load; without --precision a GPU computes in bf16 when its matrices are
// stored in bf16 (they then go to the device as they are), else in fp16.
template <class Run>
int with_device(const Args& args, const std::string& weights, Run&& run) {
  const std::string device = args.get_or(kDeviceOption, "cpu");
  const auto precision = args.get(kPrecisionOption);
  if (device == "cpu") {
    // The CPU defaults to fp32 whatever the file stores: its bf16 is opt-in (it changes results
    // in the third digit, and only CPUs with AVX512-BF16 or AMX run it faster).
    (void)weights;  // only the GPU's default precision looks at the file
    CpuOptions options;
    if (precision) {
      require(*precision == "f32" || *precision == "bf16", "option --precision: '", *precision,
              "' is neither f32 nor bf16 (the values for --device cpu)");
      options.precision = *precision == "bf16" ? CpuPrecision::BF16 : CpuPrecision::F32;
    }
    return run(CpuBackend(options));
  }
  require(device == "cuda" || device.rfind("cuda:", 0) == 0, "option --device: '", device, "' is neither cpu nor cuda[:N]");
#if defined(FOCUSPATCH_HAVE_CUDA)
  CudaOptions options;
  if (device != "cuda") {  // cuda:N
    const std::string index = device.substr(5);
    require(!index.empty() && index.size() <= 3 && index.find_first_not_of("0123456789") == std::string::npos,
            "option --device: '", device, "' does not name a GPU number after cuda:");
    options.device = std::stoi(index);
  }
  if (precision) {
    require(*precision == "f16" || *precision == "bf16", "option --precision: '", *precision,
            "' is neither f16 nor bf16 (the values for --device cuda)");
    options.precision = *precision == "bf16" ? CudaPrecision::BF16 : CudaPrecision::F16;
  } else if (!weights.empty()) {
    const WeightFile file(weights);  // the header only; the model's load checks the rest
    const TensorView* matrix = file.find("v.proj.weight");
    if (matrix && matrix->dtype == DType::BF16) options.precision = CudaPrecision::BF16;
  }
  return run(CudaBackend(options));
#else
  fail("option --device ", device, ": this program was built without the CUDA backend (CMake found no nvcc/cuBLAS, or ",
       "FOCUSPATCH_CUDA was off)");
#endif
}

}  // namespace focuspatch::cli
