// The CLIP engine against an independent PyTorch implementation (tests/reference/clip_reference.py,
// cross-checked against OpenAI's model.py): every fixture checkpoint, in every source format, is
// converted with the library's converter, loaded, run, and compared output by output.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/model/clip_model.hpp"
#include "cli_support.hpp"
#include "clip_case.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

struct Agreement {
  double max_abs_diff = 0, max_abs_ref = 0, min_cosine = 1;
};

// Compares row by row along the last axis: cosine per row and the largest absolute difference.
Agreement compare(const FloatTensor& got, const FloatTensor& ref) {
  REQUIRE(shape_string(got.shape()) == shape_string(ref.shape()));
  Agreement a;
  const std::int64_t width = ref.shape().back();
  for (std::int64_t row = 0; row < ref.numel() / width; ++row) {
    double dot = 0, ng = 0, nr = 0;
    for (std::int64_t i = row * width; i < (row + 1) * width; ++i) {
      const double g = got.data()[i], r = ref.data()[i];
      a.max_abs_diff = std::max(a.max_abs_diff, std::fabs(g - r));
      a.max_abs_ref = std::max(a.max_abs_ref, std::fabs(r));
      dot += g * r, ng += g * g, nr += r * r;
    }
    a.min_cosine = std::min(a.min_cosine, dot / std::sqrt(std::max(ng * nr, 1e-300)));
  }
  return a;
}

// The worst agreement seen by check_close, reported once per test case.
Agreement worst;

void check_close(const FloatTensor& got, const FloatTensor& ref, const std::string& what, double rel = 1e-4, double cosine = 0.99999) {
  const Agreement a = compare(got, ref);
  worst.max_abs_diff = std::max(worst.max_abs_diff, a.max_abs_diff / a.max_abs_ref);
  worst.min_cosine = std::min(worst.min_cosine, a.min_cosine);
  INFO(what, ": max |diff| ", a.max_abs_diff, " (max |ref| ", a.max_abs_ref, "), min cosine ", a.min_cosine);
  CHECK(a.max_abs_diff <= rel * a.max_abs_ref);
  CHECK(a.min_cosine >= cosine);
}

using test::Case;
using test::load_case;

using test::TempDir;

ConvertRequest request_for(const Case& c, const json::Value& file, const fs::path& out) {
  ConvertRequest req;
  const fs::path path = c.dir / file.at("path").as_string();
  const bool hf = file.at("naming").as_string() == "hf";
  req.input = hf ? path.parent_path().string() : path.string();
  req.output = out.string();
  if (!hf) {  // OpenAI naming cannot tell these; a Hugging Face config.json does
    req.vision_heads = c.get("vision_heads");
    req.text_heads = c.get("text_heads");
    req.activation = parse_activation(c.manifest.at("activation").as_string(), "manifest");
  }
  req.no_tokenizer = true;
  return req;
}

std::vector<std::vector<std::int32_t>> unpadded_rows(const std::vector<std::int64_t>& ids, std::int64_t rows) {
  const auto cols = static_cast<std::int64_t>(ids.size()) / rows;
  std::vector<std::vector<std::int32_t>> out;
  for (std::int64_t r = 0; r < rows; ++r) {
    auto first = ids.begin() + r * cols, last = first + cols;
    auto eot = std::max_element(first, last);  // first maximum, as OpenAI pools
    out.emplace_back(first, eot + 1);
  }
  return out;
}

void check_model_against_reference(const Case& c, const fs::path& weights, double rel = 1e-4, double cosine = 0.99999) {
  ClipModel<> model(weights.string());
  const TensorArchive ref = open_checkpoint((c.dir / "reference.safetensors").string());
  CHECK(model.config().vision.image_size == c.get("image_size"));
  CHECK(model.config().vision.heads == c.get("vision_heads"));
  CHECK(model.config().text.heads == c.get("text_heads"));
  CHECK(model.config().logit_scale == doctest::Approx(ref.load_float("logit_scale").data()[0]).epsilon(1e-6));

  VisionRequest request;
  for (const auto& layer : c.manifest.at("layer_tokens").as_array()) request.layers.push_back(static_cast<int>(layer.as_int64()));
  const FloatTensor images = ref.load_float("input.images");
  const VisionOutput out = model.encode_images(images.values(), images.dim(0), request);
  check_close(out.image_embeddings, ref.load_float("out.image_embeddings"), "image embeddings", rel, cosine);
  check_close(out.patch_tokens, ref.load_float("out.patch_tokens"), "patch tokens", rel, cosine);
  for (int layer : request.layers)
    check_close(out.layer_tokens.at(layer), ref.load_float("out.layer_tokens." + std::to_string(layer)),
                "layer " + std::to_string(layer) + " tokens", rel, cosine);

  const FloatTensor alt = ref.load_float("input.images_alt");
  const VisionOutput alt_out = model.encode_images(alt.values(), alt.dim(0), VisionRequest{}, static_cast<int>(alt.dim(3)));
  check_close(alt_out.image_embeddings, ref.load_float("out.alt.image_embeddings"), "image embeddings at another size", rel, cosine);
  check_close(alt_out.patch_tokens, ref.load_float("out.alt.patch_tokens"), "patch tokens at another size", rel, cosine);

  const auto ids = unpadded_rows(ref.load_int64("input.token_ids"), ref.get("input.token_ids").shape[0]);
  check_close(model.encode_token_ids(ids), ref.load_float("out.text_embeddings"), "text embeddings", rel, cosine);

  const FloatTensor prompts = ref.load_float("input.prompt_embeddings");
  const std::vector<std::int64_t> eot = ref.load_int64("input.prompt_eot");
  check_close(model.encode_token_embeddings(prompts, eot), ref.load_float("out.prompt_text_embeddings"),
              "learned-prompt text embeddings", rel, cosine);
}

}  // namespace

TEST_CASE("every fixture checkpoint converts and reproduces the PyTorch reference") {
  TempDir tmp("test_model");
  worst = {};
  for (const std::string name : {"p8_r32", "p4_r28", "p14_r42_hf", "fullvocab_tiny"}) {
    const Case c = load_case(name);
    for (const auto& file : c.manifest.at("files").as_array()) {
      CAPTURE(name);
      const std::string path = file.at("path").as_string();
      CAPTURE(path);
      const fs::path out = tmp / (name + ".fpw");
      const ConvertReport report = convert_clip_checkpoint(request_for(c, file, out));
      CHECK(report.naming == (file.at("naming").as_string() == "hf" ? CheckpointNaming::HuggingFace : CheckpointNaming::OpenAI));
      // Files whose matrices are float16 (all of it, or OpenAI's float16 + float32 LayerNorm mix)
      // keep float16 matrices; the fixture's values are exactly representable, so nothing is lost.
      const bool f16_matrices = file.at("dtype").as_string().rfind("float16", 0) == 0;
      CHECK(report.storage == (f16_matrices ? DType::F16 : DType::F32));
      check_model_against_reference(c, out);
    }
  }
  MESSAGE("worst over all outputs: max |diff| / max |ref| = ", worst.max_abs_diff, ", min cosine ", worst.min_cosine);
}

TEST_CASE("storing float32 weights as f16 or bf16 costs the expected precision") {
  TempDir tmp("test_model");
  const Case c = load_case("p8_r32");
  const json::Value& file = c.manifest.at("files")[0];
  struct Storage {
    DType dtype;
    double rel, cosine;
  };
  // f16 keeps 11 significant bits, bf16 8: relative weight errors of 2^-11 and 2^-8 that the
  // network carries into its outputs roughly unchanged in size.
  for (const Storage s : {Storage{DType::F16, 2e-3, 0.99999}, Storage{DType::BF16, 2e-2, 0.9995}}) {
    CAPTURE(dtype_name(s.dtype));
    ConvertRequest req = request_for(c, file, tmp / "lowp.fpw");
    req.dtype = s.dtype;
    const ConvertReport report = convert_clip_checkpoint(req);
    CHECK(report.storage == s.dtype);
    ClipModel<> model((tmp / "lowp.fpw").string());
    const TensorArchive ref = open_checkpoint((c.dir / "reference.safetensors").string());
    const FloatTensor images = ref.load_float("input.images");
    const VisionOutput out = model.encode_images(images.values(), images.dim(0));
    const Agreement img = compare(out.patch_tokens, ref.load_float("out.patch_tokens"));
    const auto ids = unpadded_rows(ref.load_int64("input.token_ids"), 3);
    const Agreement txt = compare(model.encode_token_ids(ids), ref.load_float("out.text_embeddings"));
    MESSAGE(dtype_name(s.dtype), " storage: patch tokens max |diff| / max |ref| = ", img.max_abs_diff / img.max_abs_ref,
            ", min cosine ", img.min_cosine, "; text embeddings ", txt.max_abs_diff / txt.max_abs_ref, ", min cosine ", txt.min_cosine);
    CHECK(img.max_abs_diff <= s.rel * img.max_abs_ref);
    CHECK(img.min_cosine >= s.cosine);
    CHECK(txt.max_abs_diff <= s.rel * txt.max_abs_ref);
    CHECK(txt.min_cosine >= s.cosine);
    // And it is not exact: the reduced precision must show, or the dtype was not applied.
    CHECK(img.max_abs_diff > 1e-6 * img.max_abs_ref);
  }
}

TEST_CASE("real CLIP vocabulary: text to token ids to embeddings, as OpenAI's tokenizer and model give") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  TempDir tmp("test_model");
  const Case c = load_case("fullvocab_tiny");
  ConvertRequest req = request_for(c, c.manifest.at("files")[0], tmp / "full.fpw");
  req.no_tokenizer = false;
  req.vocab = test::shared_vocab_path().string();
  CHECK(convert_clip_checkpoint(req).tokenizer);
  ClipModel<> model((tmp / "full.fpw").string());
  REQUIRE(model.has_tokenizer());
  const TensorArchive ref = open_checkpoint((c.dir / "reference.safetensors").string());
  const std::vector<std::string> texts = {"a photo of a scratched metal nut", "flawless"};
  const auto expected_ids = unpadded_rows(ref.load_int64("input.real_token_ids"), 2);
  CHECK(model.tokenize(texts) == expected_ids);
  CHECK(expected_ids[0] == std::vector<std::int32_t>{49406, 320, 1125, 539, 320, 48831, 4044, 6491, 49407});
  check_close(model.encode_texts(texts), ref.load_float("out.real_text_embeddings"), "text embeddings of real prompts");
}
