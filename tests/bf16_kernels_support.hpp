#pragma once
// The CPU's bf16 kernels as the tests name them: the vdpbf16ps path, the AMX path on the hardware
// tiles, and the AMX path on the tiles' software model (amx_tiles_reference.hpp), with whether
// this machine can run each (printing why not: the missing /proc/cpuinfo flag). The model's
// kernels convert and store with AVX512-BF16, so they need that and no AMX.
#include <doctest/doctest.h>

#include <string>

#include "focuspatch/backend/cpu/isa.hpp"

namespace focuspatch::test {

enum class Bf16Kernel { Avx512, Amx, AmxOnModel };
inline constexpr Bf16Kernel kBf16Kernels[] = {Bf16Kernel::Avx512, Bf16Kernel::Amx, Bf16Kernel::AmxOnModel};

inline std::string kernel_name(Bf16Kernel kernel) {
  return kernel == Bf16Kernel::Avx512 ? "bf16 avx512bf16" : kernel == Bf16Kernel::Amx ? "bf16 amx" : "bf16 amx on the tile model";
}

inline bool can_run(Bf16Kernel kernel) {
  const CpuIsa isa = kernel == Bf16Kernel::Amx ? CpuIsa::Amx : CpuIsa::Avx512Bf16;
  if (compiled_cpu_isa() < isa) {
    MESSAGE("skipped " << kernel_name(kernel) << ": this build has no AVX-512 kernels (configure with FOCUSPATCH_NATIVE on an AVX-512 CPU)");
    return false;
  }
  if (!cpu_features().has(isa)) {
    MESSAGE("skipped " << kernel_name(kernel) << ": this CPU lacks " << cpu_features().missing(isa));
    return false;
  }
  return true;
}

}  // namespace focuspatch::test
