#pragma once
// The pre-LayerNorm transformer both CLIP towers share, written once against the backend op set:
//   x = x + out_proj(attention(qkv(ln1(x))));  x = x + mlp_proj(act(mlp_fc(ln2(x))))
//
// Optionally it also carries CLIP Surgery's value-value path (Li et al., "CLIP Surgery for Better
// Explainability with Enhancement in Open-Vocabulary Tasks", code xmed-lab/CLIP_Surgery
// clip/clip_surgery_model.py; PromptAD's CLIP fork does the same) through the last n blocks: a
// second residual stream x_vv that starts as a copy of x where the first such block begins (as
// there: the new path continues the incoming stream, it does not start from zeros), and per block
//   x_vv = x_vv + out_proj(attention_vv(qkv(ln1(x))))       attention_vv = softmax(V V^T / sqrt(d)) V
// with no MLP and the ViT scale 1/sqrt(head_dim) (their ResNet variant's L2-normalised values and
// 8x scale do not apply to ViTs). As there, q/k/v come from the MAIN stream (ln1(x), shared with
// the main attention), never from x_vv, and the same out_proj weights serve both paths. The main
// stream is not touched, so everything computed from it stays bit-identical with the path on or off.
#include <functional>
#include <string>
#include <vector>

#include "focuspatch/backend/ops.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/model/config.hpp"
#include "focuspatch/model/weight_names.hpp"

namespace focuspatch {

template <class Backend>
struct LayerNormWeights {
  typename Backend::Weight gamma, beta;

  static LayerNormWeights load(const Backend& be, const WeightFile& f, const std::string& prefix, int width) {
    return {be.upload(f.tensor(prefix + ".weight", {width})), be.upload(f.tensor(prefix + ".bias", {width}))};
  }
};

template <class Backend>
struct TransformerBlockWeights {
  LayerNormWeights<Backend> ln1, ln2;
  typename Backend::Weight qkv_w, qkv_b, out_w, out_b, fc_w, fc_b, proj_w, proj_b;
};

// Activation memory for one forward pass; grows to the largest batch seen and is then reused, so
// steady-state inference allocates nothing. Operand buffers hold what feeds a matrix product or
// attention (the backend's Operand type: fp32 on the CPU, 16-bit on the GPU); the residual streams
// stay fp32 on every backend.
template <class Backend>
struct TransformerScratch {
  typename Backend::OperandBuffer normed, qkv, attended, hidden;
  typename Backend::Buffer value_value;  // the value-value path's residual stream, only once it is asked for
  std::size_t rows = 0, value_value_rows = 0;

  void reserve(const Backend& be, std::size_t token_rows, const TransformerConfig& c, bool with_value_value = false) {
    if (with_value_value && token_rows > value_value_rows) {
      value_value = be.allocate(token_rows * static_cast<std::size_t>(c.width));
      value_value_rows = token_rows;
    }
    if (token_rows <= rows) return;
    normed = be.allocate_operands(token_rows * static_cast<std::size_t>(c.width));
    qkv = be.allocate_operands(token_rows * 3 * static_cast<std::size_t>(c.width));
    attended = be.allocate_operands(token_rows * static_cast<std::size_t>(c.width));
    hidden = be.allocate_operands(token_rows * static_cast<std::size_t>(c.mlp_width));
    rows = token_rows;
  }
};

template <class Backend>
class Transformer {
 public:
  // Called after block `index` (0-based) with the residual stream, batch x seq rows of width.
  using LayerObserver = std::function<void(int index, const float* residual)>;

  Transformer() = default;
  Transformer(const Backend& be, const WeightFile& f, const std::string& tower, const TransformerConfig& c) : config_(c) {
    const int w = c.width, m = c.mlp_width;
    for (int i = 0; i < c.layers; ++i) {
      auto name = [&](const char* leaf) { return names::block(tower, i, leaf); };
      TransformerBlockWeights<Backend> blk{
          LayerNormWeights<Backend>::load(be, f, name("ln1"), w), LayerNormWeights<Backend>::load(be, f, name("ln2"), w),
          be.upload_matrix(f.tensor(name("attn.qkv.weight"), {3 * w, w})), be.upload(f.tensor(name("attn.qkv.bias"), {3 * w})),
          be.upload_matrix(f.tensor(name("attn.out.weight"), {w, w})),      be.upload(f.tensor(name("attn.out.bias"), {w})),
          be.upload_matrix(f.tensor(name("mlp.fc.weight"), {m, w})),        be.upload(f.tensor(name("mlp.fc.bias"), {m})),
          be.upload_matrix(f.tensor(name("mlp.proj.weight"), {w, m})),      be.upload(f.tensor(name("mlp.proj.bias"), {w}))};
      blocks_.push_back(std::move(blk));
    }
  }

  const TransformerConfig& config() const { return config_; }

  // Runs every block in place on x (batch x seq rows). causal masks future tokens (text tower).
  // value_value_blocks > 0 also runs the value-value path through that many last blocks and leaves
  // its residual stream in s.value_value (batch x seq rows of width).
  void forward(const Backend& be, float* x, std::int64_t batch, std::int64_t seq, bool causal, float eps,
               TransformerScratch<Backend>& s, const LayerObserver& observe = {}, int value_value_blocks = 0) const {
    const auto layers = static_cast<int>(blocks_.size());
    require(value_value_blocks >= 0 && value_value_blocks <= layers, "transformer: value-value path through ", value_value_blocks,
            " blocks requested but the stack has ", layers);
    const std::int64_t rows = batch * seq;
    s.reserve(be, static_cast<std::size_t>(rows), config_, value_value_blocks > 0);
    const Epilogue act = config_.activation == Activation::QuickGelu ? Epilogue::QuickGelu : Epilogue::Gelu;
    const int first_value_value = layers - value_value_blocks;
    for (int i = 0; i < layers; ++i) {
      const auto& b = blocks_[static_cast<std::size_t>(i)];
      const bool value_value = i >= first_value_value;
      if (value_value && i == first_value_value)
        be.copy(x, s.value_value.data(), static_cast<std::size_t>(rows) * static_cast<std::size_t>(config_.width));
      be.layer_norm(x, rows, b.ln1.gamma, b.ln1.beta, eps, s.normed.data());
      be.linear(s.normed.data(), rows, b.qkv_w, &b.qkv_b, s.qkv.data());
      be.attention(s.qkv.data(), batch, seq, config_.heads, config_.head_dim(), causal, s.attended.data());
      be.linear(s.attended.data(), rows, b.out_w, &b.out_b, x, Epilogue::None, /*accumulate=*/true);
      if (value_value) {  // same q/k/v projections, attended differently; s.attended is free again
        be.attention(s.qkv.data(), batch, seq, config_.heads, config_.head_dim(), causal, s.attended.data(),
                     AttentionKind::ValueValue);
        be.linear(s.attended.data(), rows, b.out_w, &b.out_b, s.value_value.data(), Epilogue::None, /*accumulate=*/true);
      }
      be.layer_norm(x, rows, b.ln2.gamma, b.ln2.beta, eps, s.normed.data());
      be.linear(s.normed.data(), rows, b.fc_w, &b.fc_b, s.hidden.data(), act);
      be.linear(s.hidden.data(), rows, b.proj_w, &b.proj_b, x, Epilogue::None, /*accumulate=*/true);
      if (observe) observe(i, x);
    }
  }

 private:
  TransformerConfig config_;
  std::vector<TransformerBlockWeights<Backend>> blocks_;
};

}  // namespace focuspatch
