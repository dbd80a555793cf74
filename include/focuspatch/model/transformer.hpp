#pragma once
// The pre-LayerNorm transformer both CLIP towers share, written once against the backend op set:
//   x = x + out_proj(attention(qkv(ln1(x))));  x = x + mlp_proj(act(mlp_fc(ln2(x))))
#include <functional>
#include <string>
#include <vector>

#include "focuspatch/backend/ops.hpp"
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
// steady-state inference allocates nothing.
template <class Backend>
struct TransformerScratch {
  typename Backend::Buffer normed, qkv, attended, hidden;
  std::size_t rows = 0;

  void reserve(const Backend& be, std::size_t token_rows, const TransformerConfig& c) {
    if (token_rows <= rows) return;
    normed = be.allocate(token_rows * static_cast<std::size_t>(c.width));
    qkv = be.allocate(token_rows * 3 * static_cast<std::size_t>(c.width));
    attended = be.allocate(token_rows * static_cast<std::size_t>(c.width));
    hidden = be.allocate(token_rows * static_cast<std::size_t>(c.mlp_width));
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
          be.upload(f.tensor(name("attn.qkv.weight"), {3 * w, w})), be.upload(f.tensor(name("attn.qkv.bias"), {3 * w})),
          be.upload(f.tensor(name("attn.out.weight"), {w, w})),      be.upload(f.tensor(name("attn.out.bias"), {w})),
          be.upload(f.tensor(name("mlp.fc.weight"), {m, w})),        be.upload(f.tensor(name("mlp.fc.bias"), {m})),
          be.upload(f.tensor(name("mlp.proj.weight"), {w, m})),      be.upload(f.tensor(name("mlp.proj.bias"), {w}))};
      blocks_.push_back(std::move(blk));
    }
  }

  const TransformerConfig& config() const { return config_; }

  // Runs every block in place on x (batch x seq rows). causal masks future tokens (text tower).
  void forward(const Backend& be, float* x, std::int64_t batch, std::int64_t seq, bool causal, float eps,
               TransformerScratch<Backend>& s, const LayerObserver& observe = {}) const {
    const std::int64_t rows = batch * seq;
    s.reserve(be, static_cast<std::size_t>(rows), config_);
    const Epilogue act = config_.activation == Activation::QuickGelu ? Epilogue::QuickGelu : Epilogue::Gelu;
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      const auto& b = blocks_[i];
      be.layer_norm(x, rows, b.ln1.gamma, b.ln1.beta, eps, s.normed.data());
      be.linear(s.normed.data(), rows, b.qkv_w, &b.qkv_b, s.qkv.data());
      be.attention(s.qkv.data(), batch, seq, config_.heads, config_.head_dim(), causal, s.attended.data());
      be.linear(s.attended.data(), rows, b.out_w, &b.out_b, x, Epilogue::None, /*accumulate=*/true);
      be.layer_norm(x, rows, b.ln2.gamma, b.ln2.beta, eps, s.normed.data());
      be.linear(s.normed.data(), rows, b.fc_w, &b.fc_b, s.hidden.data(), act);
      be.linear(s.hidden.data(), rows, b.proj_w, &b.proj_b, x, Epilogue::None, /*accumulate=*/true);
      if (observe) observe(static_cast<int>(i), x);
    }
  }

 private:
  TransformerConfig config_;
  std::vector<TransformerBlockWeights<Backend>> blocks_;
};

}  // namespace focuspatch
