#pragma once
// Names shared by every backend's op set, so model code can say what it wants without knowing
// which backend runs it.
namespace focuspatch {

// What a linear layer applies to its output before storing it.
enum class Epilogue {
  None,
  QuickGelu,  // x * sigmoid(1.702 x), OpenAI CLIP
  Gelu,       // exact erf GELU, as Hugging Face configs with hidden_act "gelu"
};

// How attention weights are formed. ValueValue uses the values as queries and keys too
// (softmax(V V^T / sqrt(d)) V), the path CLIP Surgery and PromptAD use to make patch tokens
// agree locally with text.
enum class AttentionKind { QueryKey, ValueValue };

}  // namespace focuspatch
