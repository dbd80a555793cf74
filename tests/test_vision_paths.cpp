// The image tower's joint-space patch features against the PyTorch reference
// (tests/reference/clip_reference.py encode_image_paths, fixtures from gen_surgery_fixtures.py):
// every block's residual stream through ln_post and the projection, and CLIP Surgery's
// value-value path through the last n blocks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <unistd.h>
#include <vector>

#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/model/clip_model.hpp"
#include "clip_case.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

using test::Case;
using test::load_case;

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("focuspatch_test_vision_paths_" + std::to_string(::getpid()))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// Converts the case's first checkpoint file to a .fpw in tmp.
fs::path convert_case(const Case& c, const TempDir& tmp) {
  const json::Value& file = c.manifest.at("files")[0];
  const fs::path path = c.dir / file.at("path").as_string();
  const bool hf = file.at("naming").as_string() == "hf";
  ConvertRequest req;
  req.input = hf ? path.parent_path().string() : path.string();
  req.output = (tmp / (c.name + ".fpw")).string();
  if (!hf) {  // OpenAI naming cannot tell these; a Hugging Face config.json does
    req.vision_heads = c.get("vision_heads");
    req.text_heads = c.get("text_heads");
    req.activation = parse_activation(c.manifest.at("activation").as_string(), "manifest");
  }
  req.no_tokenizer = true;
  convert_clip_checkpoint(req);
  return req.output;
}

// The worst agreement check_close has seen: max |diff| / max |ref| and the smallest row cosine.
double worst_rel = 0, worst_cosine = 1;

void check_close(const FloatTensor& got, const FloatTensor& ref, const std::string& what) {
  REQUIRE(shape_string(got.shape()) == shape_string(ref.shape()));
  double max_diff = 0, max_ref = 0, min_cosine = 1;
  const std::int64_t width = ref.shape().back();
  for (std::int64_t row = 0; row < ref.numel() / width; ++row) {
    double dot = 0, ng = 0, nr = 0;
    for (std::int64_t i = row * width; i < (row + 1) * width; ++i) {
      const double g = got.data()[i], r = ref.data()[i];
      max_diff = std::max(max_diff, std::fabs(g - r));
      max_ref = std::max(max_ref, std::fabs(r));
      dot += g * r, ng += g * g, nr += r * r;
    }
    min_cosine = std::min(min_cosine, dot / std::sqrt(std::max(ng * nr, 1e-300)));
  }
  worst_rel = std::max(worst_rel, max_diff / max_ref);
  worst_cosine = std::min(worst_cosine, min_cosine);
  INFO(what, ": max |diff| ", max_diff, " (max |ref| ", max_ref, "), min cosine ", min_cosine);
  CHECK(max_diff <= 1e-4 * max_ref);
  CHECK(min_cosine >= 0.99999);
}

bool same_bits(const FloatTensor& a, const FloatTensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0;
}

// The first image of a [B, ...] batch, as a batch of one.
FloatTensor first_item(const FloatTensor& t) {
  Shape shape = t.shape();
  shape[0] = 1;
  FloatTensor out(shape);
  std::copy_n(t.data(), out.numel(), out.data());
  return out;
}

std::vector<int> all_blocks(int layers) {
  std::vector<int> v(static_cast<std::size_t>(layers));
  for (int i = 0; i < layers; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

}  // namespace

TEST_CASE("projected layers and value-value tokens reproduce the PyTorch reference") {
  TempDir tmp;
  for (const std::string name : {"p8_r32", "p4_r28", "p14_r42_hf"}) {
    CAPTURE(name);
    const Case c = load_case(name);
    ClipModel<> model(convert_case(c, tmp).string());
    const TensorArchive inputs = open_checkpoint((c.dir / "reference.safetensors").string());
    const TensorArchive ref = open_checkpoint((c.dir / "surgery.safetensors").string());
    const FloatTensor images = inputs.load_float("input.images");
    const int layers = c.get("vision_layers");
    REQUIRE(model.config().vision.layers == layers);

    // A batch of one first, so the workspace (and the value-value stream in it) has to grow for two.
    VisionRequest one;
    one.value_value_blocks = layers;
    const FloatTensor image0 = first_item(images);
    check_close(model.encode_images(image0.values(), 1, one).value_value_tokens,
                first_item(ref.load_float("out.vv_tokens." + std::to_string(layers))), "value-value tokens, first image alone");

    for (int n = 1; n <= layers; ++n) {
      CAPTURE(n);
      VisionRequest request;
      request.projected_layers = all_blocks(layers);
      request.value_value_blocks = n;
      const VisionOutput out = model.encode_images(images.values(), images.dim(0), request);
      for (int layer = 0; layer < layers; ++layer)
        check_close(out.projected_layers.at(layer), ref.load_float("out.projected_layers." + std::to_string(layer)),
                    "projected layer " + std::to_string(layer));
      const std::string key = "out.vv_tokens." + std::to_string(n);
      check_close(out.value_value_tokens, ref.load_float(key), key);
      // The last block's stream is what patch_tokens projects; the value-value path takes the main CLS.
      CHECK(same_bits(out.projected_layers.at(layers - 1), out.patch_tokens));
      for (std::int64_t b = 0; b < images.dim(0); ++b) {
        const std::int64_t seq = out.patch_tokens.dim(1), d = out.patch_tokens.dim(2);
        CHECK(std::memcmp(out.value_value_tokens.data() + b * seq * d, out.patch_tokens.data() + b * seq * d,
                          static_cast<std::size_t>(d) * sizeof(float)) == 0);
      }
    }
  }
  MESSAGE("worst over all outputs: max |diff| / max |ref| = ", worst_rel, ", min cosine ", worst_cosine);
}

TEST_CASE("the main outputs do not change when projected layers and the value-value path are asked for") {
  TempDir tmp;
  const Case c = load_case("p4_r28");
  ClipModel<> model(convert_case(c, tmp).string());
  const FloatTensor images = open_checkpoint((c.dir / "reference.safetensors").string()).load_float("input.images");
  const int layers = c.get("vision_layers");

  VisionRequest plain;
  plain.layers = all_blocks(layers);
  const VisionOutput base = model.encode_images(images.values(), images.dim(0), plain);
  CHECK(base.projected_layers.empty());
  CHECK(base.value_value_tokens.numel() == 0);

  VisionRequest everything = plain;
  everything.projected_layers = {layers - 1, 0};
  everything.value_value_blocks = layers;
  const VisionOutput full = model.encode_images(images.values(), images.dim(0), everything);
  CHECK(same_bits(full.image_embeddings, base.image_embeddings));
  CHECK(same_bits(full.patch_tokens, base.patch_tokens));
  for (int layer = 0; layer < layers; ++layer) CHECK(same_bits(full.layer_tokens.at(layer), base.layer_tokens.at(layer)));
  CHECK(full.projected_layers.size() == 2);

  // Without patch tokens only the CLS is projected for the image embedding; the value-value
  // tokens are still every token, and the same ones.
  VisionRequest lean;
  lean.patch_tokens = false;
  lean.value_value_blocks = layers;
  const VisionOutput small = model.encode_images(images.values(), images.dim(0), lean);
  CHECK(small.patch_tokens.numel() == 0);
  CHECK(same_bits(small.value_value_tokens, full.value_value_tokens));
  CHECK(small.image_embeddings.shape() == full.image_embeddings.shape());

  // And the same workspace serves a plain request again unchanged.
  CHECK(same_bits(model.encode_images(images.values(), images.dim(0), plain).patch_tokens, base.patch_tokens));
}

TEST_CASE("blocks outside the model are refused") {
  TempDir tmp;
  const Case c = load_case("p8_r32");
  ClipModel<> model(convert_case(c, tmp).string());
  const FloatTensor images = open_checkpoint((c.dir / "reference.safetensors").string()).load_float("input.images");
  const int layers = c.get("vision_layers");
  auto encode = [&](const VisionRequest& r) { return model.encode_images(images.values(), images.dim(0), r); };

  VisionRequest r;
  r.projected_layers = {layers};
  CHECK_THROWS_WITH_AS(encode(r), doctest::Contains("projected layer 2 requested but the model has 2 blocks"), Error);
  r.projected_layers = {-1};
  CHECK_THROWS_WITH_AS(encode(r), doctest::Contains("projected layer -1 requested"), Error);
  r.projected_layers = {};
  r.value_value_blocks = layers + 1;
  CHECK_THROWS_WITH_AS(encode(r), doctest::Contains("value-value path through 3 blocks requested but the model has 2"), Error);
  r.value_value_blocks = -1;
  CHECK_THROWS_WITH_AS(encode(r), doctest::Contains("value-value path through -1 blocks"), Error);
  r.value_value_blocks = layers;  // all of them is fine
  CHECK(encode(r).value_value_tokens.dim(1) == images.dim(2) / c.get("patch_size") * (images.dim(3) / c.get("patch_size")) + 1);
}
