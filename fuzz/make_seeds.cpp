// Writes the generated seeds of the fpw target: .fpw files made by the library's own writers, so
// the fuzzer starts from valid files of every kind the readers accept.
//   fuzz_make_seeds <corpus/fpw folder>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "focuspatch/anomaly/learned_prompts.hpp"
#include "focuspatch/anomaly/prompt_bank.hpp"
#include "focuspatch/convert/random_clip.hpp"
#include "focuspatch/io/weight_writer.hpp"

using namespace focuspatch;

// The smallest CLIP the model code accepts: one block per tower, width 8, a 2x2 grid, 4 tokens.
static ClipConfig tiny_config() {
  ClipConfig c;
  c.vision.image_size = 8;
  c.vision.patch_size = 4;
  c.vision.width = 8;
  c.vision.layers = 1;
  c.vision.heads = 2;
  c.vision.mlp_width = 16;
  c.text.width = 8;
  c.text.layers = 1;
  c.text.heads = 2;
  c.text.mlp_width = 16;
  c.text.context_length = 4;
  c.text.vocab_size = 3;
  c.embed_dim = 4;
  c.logit_scale = 4.6052f;
  return c;
}

static FloatTensor unit_rows(std::int64_t rows, std::int64_t cols) {
  FloatTensor t({rows, cols});
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) t.data()[r * cols + c] = (c == r % cols) ? 1.0f : 0.0f;
  return t;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds <output folder>\n");
    return 2;
  }
  try {
    const std::filesystem::path out = argv[1];
    std::filesystem::create_directories(out);

    ConvertOptions f16;
    f16.dtype = DType::F16;
    write_clip_weights(random_clip_plan(tiny_config(), 1), f16, (out / "tiny_model_f16.fpw").string());

    // Configuration numbers every load must refuse, naming the field: so the fuzzer starts on
    // both sides of ClipConfig's checks (a NaN logit scale, a zero image std).
    ConversionPlan nan_scale = random_clip_plan(tiny_config(), 1);
    nan_scale.config.logit_scale = std::nanf("");
    write_clip_weights(nan_scale, f16, (out / "nan_logit_scale.fpw").string());
    ConversionPlan zero_std = random_clip_plan(tiny_config(), 1);
    zero_std.config.image_std[1] = 0.0f;
    write_clip_weights(zero_std, f16, (out / "zero_image_std.fpw").string());

    // Metadata of every kind, tensors of every storage type, keyword embeddings and learned prompts.
    WeightWriter w;
    w.set_meta("int", std::int64_t{-7});
    w.set_meta("float", 0.25);
    w.set_meta("string", "text");
    w.set_meta("ints", fpw::MetaValue::of(std::vector<std::int64_t>{1, 2, 3}));
    w.set_meta("floats", fpw::MetaValue::of(std::vector<double>{0.5, -1.0}));
    w.set_meta("strings", fpw::MetaValue::of(std::vector<std::string>{"a", "bc"}));
    w.add_tensor("f32", DType::F32, unit_rows(2, 3));
    w.add_tensor("f16", DType::F16, unit_rows(3, 2));
    w.add_tensor("bf16", DType::BF16, unit_rows(1, 4));
    KeywordEmbeddings e;
    e.object = "bottle";
    e.bank_fingerprint = "0123";
    e.names = {"good", "broken"};
    e.kinds = {KeywordKind::Normal, KeywordKind::Anomaly};
    e.matrix = unit_rows(2, 4);
    add_keyword_embeddings(w, e);
    LearnedPrompts p;
    p.source = "seed";
    for (auto [name, kind] : {std::pair{"normal", KeywordKind::Normal}, std::pair{"anomaly", KeywordKind::Anomaly}}) {
      LearnedState s;
      s.name = name;
      s.kind = kind;
      s.context = FloatTensor({1, 2, 4});
      for (std::int64_t i = 0; i < s.context.numel(); ++i) s.context.data()[i] = 0.125f * static_cast<float>(i);
      p.states.push_back(std::move(s));
    }
    add_learned_prompts(w, p);
    w.write(out / "kinds_prompts.fpw");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
