#pragma once
// Which instruction set the CPU kernels use, decided once per process from cpuid (what the CPU
// has), what this build compiled in, and an optional cap in the environment:
//
//   FOCUSPATCH_CPU_ISA=amx|avx512bf16|avx512|portable
//
// a ceiling, as oneDNN's ONEDNN_MAX_CPU_ISA is: the best path at or below it that the CPU and the
// build support runs. It lets every path be tested and timed on one machine (a value above what
// the CPU has simply gets the best it does have; the chosen path is always reported).
//
//   amx         AMX tiles, tdpbf16ps (Intel Sapphire Rapids and later): bf16 products
//   avx512bf16  AVX-512 with vdpbf16ps (Intel Cooper Lake, AMD Zen 4 and later): bf16 products
//   avx512      AVX-512F fp32 kernels (bf16 requests fall back to fp32 here)
//   portable    Eigen and plain loops (whatever vector width the compiler targets)
//
// The AVX-512 kernels are compiled only into builds for an AVX-512 target (-march=native on such a
// machine, FOCUSPATCH_NATIVE); the bf16 and AMX kernels then carry their own target attributes, so
// they exist in every such build and run only where cpuid says the CPU has them.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define FOCUSPATCH_X86_CPUID 1
#endif

#include "focuspatch/core/error.hpp"

namespace focuspatch {

enum class CpuIsa { Portable = 0, Avx512 = 1, Avx512Bf16 = 2, Amx = 3 };

inline constexpr const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Amx: return "amx";
    case CpuIsa::Avx512Bf16: return "avx512bf16";
    case CpuIsa::Avx512: return "avx512";
    default: return "portable";
  }
}

// The most this build can run: the AVX-512 kernels exist only in AVX-512 builds.
inline constexpr CpuIsa compiled_cpu_isa() {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(FOCUSPATCH_X86_CPUID)
  return CpuIsa::Amx;
#else
  return CpuIsa::Portable;
#endif
}

// What cpuid (and the OS) say this CPU can run, with the /proc/cpuinfo names of what it lacks.
struct CpuFeatures {
  bool avx512 = false;      // avx512f + avx512bw + avx512vl, with the OS saving zmm state
  bool avx512_bf16 = false;
  bool amx = false;         // amx_tile + amx_bf16, and Linux granted the tile data state
  std::string missing_avx512, missing_bf16, missing_amx;  // empty when present

  static CpuFeatures detect() {
    CpuFeatures f;
    f.missing_avx512 = "avx512f";
    f.missing_bf16 = "avx512_bf16";
    f.missing_amx = "amx_bf16, amx_tile";
#if defined(FOCUSPATCH_X86_CPUID)
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = (c >> 27) & 1u;
    std::uint64_t xcr0 = 0;
    if (osxsave) {
      std::uint32_t lo = 0, hi = 0;
      __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
      xcr0 = (std::uint64_t{hi} << 32) | lo;
    }
    const bool zmm_state = (xcr0 & 0xe6) == 0xe6;  // SSE, AVX, opmask, upper zmm, zmm16-31
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    const bool f512 = (b >> 16) & 1u, bw = (b >> 30) & 1u, vl = (b >> 31) & 1u;
    const bool amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u;
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1);
    const bool bf16 = (a1 >> 5) & 1u;
    f.avx512 = f512 && bw && vl && zmm_state;
    f.missing_avx512 = !f512 ? "avx512f" : !bw ? "avx512bw" : !vl ? "avx512vl" : !zmm_state ? "OS support for zmm state" : "";
    f.avx512_bf16 = f.avx512 && bf16;
    f.missing_bf16 = !f.avx512 ? f.missing_avx512 : bf16 ? "" : "avx512_bf16";
    if (!amx_tile || !amx_bf16) {
      f.missing_amx = !amx_tile && !amx_bf16 ? "amx_bf16, amx_tile" : !amx_tile ? "amx_tile" : "amx_bf16";
    } else if (!f.avx512_bf16) {
      f.missing_amx = f.missing_bf16;  // our AMX path converts and stores with AVX-512
    } else if (!request_tile_data()) {
      f.missing_amx = "permission for AMX tile data (arch_prctl ARCH_REQ_XCOMP_PERM refused)";
    } else {
      f.amx = true;
      f.missing_amx.clear();
    }
#endif
    return f;
  }

  bool has(CpuIsa isa) const {
    switch (isa) {
      case CpuIsa::Amx: return amx;
      case CpuIsa::Avx512Bf16: return avx512_bf16;
      case CpuIsa::Avx512: return avx512;
      default: return true;
    }
  }
  // The /proc/cpuinfo flag(s) this CPU lacks for isa, or "" when it has them.
  const std::string& missing(CpuIsa isa) const {
    static const std::string none;
    switch (isa) {
      case CpuIsa::Amx: return missing_amx;
      case CpuIsa::Avx512Bf16: return missing_bf16;
      case CpuIsa::Avx512: return missing_avx512;
      default: return none;
    }
  }

 private:
  // Linux keeps AMX tile data off until a process asks for it (the 8 KiB of tile state would
  // otherwise grow every signal frame); once granted it holds for every thread of the process.
  static bool request_tile_data() {
#if defined(FOCUSPATCH_X86_CPUID) && defined(__linux__)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }
};

inline const CpuFeatures& cpu_features() {
  static const CpuFeatures features = CpuFeatures::detect();
  return features;
}

// FOCUSPATCH_CPU_ISA's value as an ISA; a value that names none is an error naming the variable.
inline CpuIsa parse_cpu_isa(std::string_view text, std::string_view what) {
  for (CpuIsa isa : {CpuIsa::Amx, CpuIsa::Avx512Bf16, CpuIsa::Avx512, CpuIsa::Portable})
    if (text == cpu_isa_name(isa)) return isa;
  fail(what, ": '", text, "' is none of amx, avx512bf16, avx512, portable");
}

// The best ISA at or below `cap` that both the CPU and this build support.
inline CpuIsa best_cpu_isa(CpuIsa cap) {
  const CpuFeatures& f = cpu_features();
  for (int i = static_cast<int>(cap); i > 0; --i) {
    const auto isa = static_cast<CpuIsa>(i);
    if (isa <= compiled_cpu_isa() && f.has(isa)) return isa;
  }
  return CpuIsa::Portable;
}

// The process's ISA: cpuid, capped by FOCUSPATCH_CPU_ISA, decided on first use.
inline CpuIsa cpu_isa() {
  static const CpuIsa isa = [] {
    const char* cap = std::getenv("FOCUSPATCH_CPU_ISA");
    return best_cpu_isa(cap && *cap ? parse_cpu_isa(cap, "environment variable FOCUSPATCH_CPU_ISA") : CpuIsa::Amx);
  }();
  return isa;
}

}  // namespace focuspatch
