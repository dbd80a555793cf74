#pragma once
// The tensor names of a CLIP model inside a .fpw file. The converter maps every foreign naming
// (OpenAI, open_clip, Hugging Face) onto these; the runtime knows only these.
//
//   v.patch_embed.weight [W, 3, P, P]   v.class_embed [W]   v.pos_embed [T, W]
//   v.ln_pre.{weight,bias}   v.ln_post.{weight,bias}   v.proj.weight [D, W]
//   t.token_embed [V, Wt]   t.pos_embed [C, Wt]   t.ln_final.{weight,bias}   t.proj.weight [D, Wt]
//   {v,t}.blk.N.ln1.{weight,bias}   .attn.qkv.{weight [3W, W], bias}   .attn.out.{weight, bias}
//   {v,t}.blk.N.ln2.{weight,bias}   .mlp.fc.{weight [M, W], bias}       .mlp.proj.{weight [W, M], bias}
// Linear weights are [out, in] as in PyTorch's nn.Linear.
#include <string>

namespace focuspatch::names {

inline std::string block(const std::string& tower, int index, const std::string& leaf) {
  return tower + ".blk." + std::to_string(index) + "." + leaf;
}

}  // namespace focuspatch::names
