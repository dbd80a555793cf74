#pragma once
// The CPU backend's attention: the one place that picks a kernel family.
//
//   fp32 products:  attention_f32.hpp (AVX-512; GCC vector extensions or plain loops elsewhere)
//   bf16 products:  attention_bf16_amx.hpp (AMX tiles)  | attention_bf16_avx512.hpp (vdpbf16ps)
//   reference:      attention_reference.hpp (double sums; bf16-rounded operands for the bf16 paths)
//
// All families share one blocking and the fp32 softmax (attention_f32.hpp's run_attention). A bf16
// CpuBackend runs attention in bf16 wherever its linear layers do, on the same instructions.
#include <cstdint>

#include "focuspatch/backend/cpu/attention_bf16_amx.hpp"
#include "focuspatch/backend/cpu/attention_bf16_avx512.hpp"
#include "focuspatch/backend/cpu/attention_f32.hpp"
#include "focuspatch/backend/cpu/isa.hpp"
#include "focuspatch/backend/ops.hpp"
#include "focuspatch/core/error.hpp"

namespace focuspatch {

// Which kernel family attention's two products (Q K^T and P V) run.
enum class CpuAttentionPath { F32, Bf16Avx512, Bf16Amx };

inline constexpr const char* cpu_attention_path_name(CpuAttentionPath path) {
  return path == CpuAttentionPath::Bf16Amx ? "bf16 amx" : path == CpuAttentionPath::Bf16Avx512 ? "bf16 avx512bf16" : "f32";
}

// bf16 products where asked for: on AMX tiles where the ISA (cpuid, capped by FOCUSPATCH_CPU_ISA)
// has them, else on AVX512-BF16; fp32 otherwise, so a cap of avx512 or below gives exactly the
// fp32 attention.
inline CpuAttentionPath choose_attention_path(bool bf16_products, CpuIsa isa) {
  if (!bf16_products || isa < CpuIsa::Avx512Bf16) return CpuAttentionPath::F32;
  return isa >= CpuIsa::Amx ? CpuAttentionPath::Bf16Amx : CpuAttentionPath::Bf16Avx512;
}

// Multi-head attention over packed projections: qkv holds rows [q | k | v] of width 3 * heads *
// head_dim for batch x seq tokens; out receives batch x seq rows of heads * head_dim:
// softmax(q k^T / sqrt(head_dim)) v per head, keys after the query masked when causal, and q = k = v
// when kind is ValueValue. path must be one this process can run (CpuBackend chooses it once).
inline void cpu_attention(const float* qkv, std::int64_t batch, std::int64_t seq, int heads, int head_dim, bool causal, float* out,
                          AttentionKind kind = AttentionKind::QueryKey, CpuAttentionPath path = CpuAttentionPath::F32) {
  if (path == CpuAttentionPath::Bf16Amx) {
#if defined(__AVX512F__) && defined(FOCUSPATCH_HAVE_AMX_TILES)
    require(cpu_features().amx, "cpu attention: the amx path needs ", cpu_features().missing(CpuIsa::Amx), ", which this CPU lacks");
    return cpu_attention_bf16_amx(qkv, batch, seq, heads, head_dim, causal, out, kind);
#else
    fail("cpu attention: path '", cpu_attention_path_name(path), "' is not compiled into this build");
#endif
  }
  if (path == CpuAttentionPath::Bf16Avx512) {
#if defined(__AVX512F__)
    require(cpu_features().avx512_bf16, "cpu attention: the bf16 path needs ", cpu_features().missing(CpuIsa::Avx512Bf16),
            ", which this CPU lacks");
    return cpu_attention_bf16_avx512(qkv, batch, seq, heads, head_dim, causal, out, kind);
#else
    fail("cpu attention: path '", cpu_attention_path_name(path), "' is not compiled into this build");
#endif
  }
  cpu_attention_f32(qkv, batch, seq, heads, head_dim, causal, out, kind);
}

}  // namespace focuspatch
