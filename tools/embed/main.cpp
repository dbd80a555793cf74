// focuspatch-embed: CLIP image and text embeddings from a .fpw file, as JSON, for checking a
// converted model against another implementation and for zero-shot scoring from scripts.
#include <cmath>
#include <optional>
#include <iostream>
#include <string>
#include <vector>

#include "common/cli_args.hpp"
#include "common/device_option.hpp"
#include "common/image_options.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/io/output_file.hpp"
#include "focuspatch/io/preprocess.hpp"
#include "focuspatch/model/clip_model.hpp"

namespace {

constexpr const char* kUsage = R"(usage: focuspatch-embed --weights FILE.fpw [--image PATH]... [--text STRING]... [options]

With --json, writes one compact JSON object with exactly these keys, raw model outputs in
argument order: image_embeddings (per image), patch_tokens (per image, every token after ln_post
and the projection, CLS first), text_embeddings (per text), token_ids (per text, with start and
end tokens, no padding). Without it, a readable JSON report: per image its embedding (and with
--patch-tokens every token, CLS first), per text its token ids (with start and end tokens) and
embedding, and when both are given the cosine similarities and CLIP's softmax probabilities of each image over the texts.

options:
  --weights FILE     a .fpw file made by focuspatch-convert
  --image PATH       an image (PNG, JPEG, BMP, ...); repeat for more
  --text STRING      a text; repeat for more
  --size N           run images at N x N pixels instead of the model's resolution (multiple of the patch)
  --patch-tokens     also write every image token after ln_post and the projection
  --json             the compact form above (stable; what scripts and acceptance checks read)
  --normalize        write L2-normalized embeddings instead of the raw projections
  --out FILE         write the JSON there instead of standard output
  --max-image-pixels N
                     refuse larger images before decoding them (default 100000000)
  --device D         cpu (default) or cuda[:N], the N-th GPU (default 0)
  --precision P      matrix products: on the CPU f32 (default) or bf16 (AVX512-BF16/AMX,
                     else f32); on a GPU f16 or bf16 (default: bf16 for weights stored
                     in bf16, else f16)
  -h, --help         this text
)";

void normalize_rows(focuspatch::FloatTensor& t) {
  const std::int64_t width = t.shape().back();
  for (std::int64_t r = 0; r < t.numel() / width; ++r) {
    float* row = t.data() + r * width;
    double ss = 0;
    for (std::int64_t i = 0; i < width; ++i) ss += double(row[i]) * row[i];
    const float inv = ss > 0 ? static_cast<float>(1.0 / std::sqrt(ss)) : 0.0f;
    for (std::int64_t i = 0; i < width; ++i) row[i] *= inv;
  }
}

void write_row(focuspatch::json::Writer& w, const float* row, std::int64_t width) {
  w.begin_array();
  for (std::int64_t i = 0; i < width; ++i) w.value(row[i]);
  w.end_array();
}

using namespace focuspatch;

FloatTensor preprocess_all(const ClipConfig& c, const std::vector<std::string>& images, int size, const ImageLoadOptions& options) {
  using namespace focuspatch;
  ClipPreprocess pp;
  pp.resolution = size;
  pp.mean = c.image_mean;
  pp.std = c.image_std;
  FloatTensor pixels({static_cast<std::int64_t>(images.size()), 3, size, size});
  for (std::size_t i = 0; i < images.size(); ++i)
    preprocess_clip_into(load_image(images[i], options), pp, pixels.data() + static_cast<std::int64_t>(i) * 3 * size * size);
  return pixels;
}

void emit(const std::string& text, const std::optional<std::string>& path) {
  if (!path) {
    std::cout << text << "\n";
    return;
  }
  write_file(*path, text + "\n");
}

// The stable, compact form (--json): exactly image_embeddings, patch_tokens, text_embeddings and
// token_ids, raw model outputs, each a list in argument order.
template <class Backend>
void write_compact(focuspatch::ClipModel<Backend>& model, const std::vector<std::string>& images, const std::vector<std::string>& texts, int size,
                   const std::optional<std::string>& out, const focuspatch::ImageLoadOptions& image_options) {
  using namespace focuspatch;
  const std::int64_t D = model.config().embed_dim;
  json::Writer w(0);
  w.begin_object();
  w.member("device", cli::device_description(model.backend()));  // which kernels ran, e.g. "cpu bf16 avx512bf16"
  w.key("image_embeddings").begin_array();
  VisionOutput v;
  if (!images.empty()) {
    const FloatTensor pixels = preprocess_all(model.config(), images, size, image_options);
    v = model.encode_images(pixels.values(), pixels.dim(0), VisionRequest{}, size);
    for (std::size_t i = 0; i < images.size(); ++i) write_row(w, v.image_embeddings.data() + static_cast<std::int64_t>(i) * D, D);
  }
  w.end_array().key("patch_tokens").begin_array();
  for (std::size_t i = 0; i < images.size(); ++i) {
    const std::int64_t seq = v.patch_tokens.dim(1);
    w.begin_array();
    for (std::int64_t t = 0; t < seq; ++t) write_row(w, v.patch_tokens.data() + (static_cast<std::int64_t>(i) * seq + t) * D, D);
    w.end_array();
  }
  w.end_array().key("text_embeddings").begin_array();
  std::vector<std::vector<std::int32_t>> ids;
  if (!texts.empty()) {
    ids = model.tokenize(texts);
    const FloatTensor t = model.encode_token_ids(ids);
    for (std::size_t i = 0; i < texts.size(); ++i) write_row(w, t.data() + static_cast<std::int64_t>(i) * D, D);
  }
  w.end_array().key("token_ids").begin_array();
  for (const auto& row : ids) {
    w.begin_array();
    for (auto id : row) w.value(id);
    w.end_array();
  }
  w.end_array().end_object();
  emit(w.str(), out);
}

int run(int argc, char** argv) {
  using namespace focuspatch;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "-h" || std::string(argv[i]) == "--help") return std::cout << kUsage, 0;
  const cli::Args args(argc, argv, {"weights", "image", "text", "size", "out", cli::kMaxImagePixelsOption, cli::kDeviceOption, cli::kPrecisionOption},
                       {"patch-tokens", "normalize", "json"});
  require(args.positional().empty(), "unexpected argument '", args.positional().empty() ? "" : args.positional().front(),
          "' (images go after --image, texts after --text)");
  const auto weights = args.get("weights");
  require(weights.has_value(), "no --weights FILE.fpw given (see --help)");
  const auto images = args.all("image");
  const auto texts = args.all("text");
  require(!images.empty() || !texts.empty(), "nothing to embed: give --image PATH and/or --text STRING");
  const bool compact = args.has("json");
  const bool normalize = args.has("normalize"), patch_tokens = compact || args.has("patch-tokens");
  require(!(compact && normalize), "--json writes the raw model outputs; it does not go with --normalize");

  return cli::with_device(args, args.get_or("weights", ""), [&](auto backend) {
    ClipModel model(*weights, std::move(backend));
    const ClipConfig& c = model.config();
    const int size = static_cast<int>(args.get_int("size", c.vision.patch_size, 4096).value_or(c.vision.image_size));
    require(size % c.vision.patch_size == 0, "option --size: ", size, " is not a multiple of the patch size ", c.vision.patch_size);

    const ImageLoadOptions image_options = cli::image_load_options(args);
    if (compact) return write_compact(model, images, texts, size, args.get("out"), image_options), 0;

    json::Writer w(1);
    w.begin_object();
    w.member("weights", *weights).member("device", cli::device_description(model.backend()));
    w.key("model").begin_object();
    w.member("image_size", size).member("patch_size", c.vision.patch_size).member("embed_dim", c.embed_dim);
    w.member("logit_scale", c.logit_scale).member("normalized", normalize);
    w.end_object();

    FloatTensor image_embeddings, text_embeddings;
    if (!images.empty()) {
      const FloatTensor pixels = preprocess_all(c, images, size, image_options);
      VisionRequest request;
      request.patch_tokens = patch_tokens;
      VisionOutput out = model.encode_images(pixels.values(), pixels.dim(0), request, size);
      image_embeddings = std::move(out.image_embeddings);
      if (normalize) {
        normalize_rows(image_embeddings);
        if (patch_tokens) normalize_rows(out.patch_tokens);
      }
      w.key("images").begin_array();
      for (std::size_t i = 0; i < images.size(); ++i) {
        w.begin_object().member("path", images[i]).key("embedding");
        write_row(w, image_embeddings.data() + static_cast<std::int64_t>(i) * c.embed_dim, c.embed_dim);
        if (patch_tokens) {
          const std::int64_t seq = out.patch_tokens.dim(1);
          w.key("patch_tokens").begin_array();
          for (std::int64_t t = 0; t < seq; ++t)
            write_row(w, out.patch_tokens.data() + (static_cast<std::int64_t>(i) * seq + t) * c.embed_dim, c.embed_dim);
          w.end_array();
        }
        w.end_object();
      }
      w.end_array();
    }
    if (!texts.empty()) {
      const auto ids = model.tokenize(texts);
      text_embeddings = model.encode_token_ids(ids);
      if (normalize) normalize_rows(text_embeddings);
      w.key("texts").begin_array();
      for (std::size_t i = 0; i < texts.size(); ++i) {
        w.begin_object().member("text", texts[i]).key("token_ids").begin_array();
        for (auto id : ids[i]) w.value(id);
        w.end_array().key("embedding");
        write_row(w, text_embeddings.data() + static_cast<std::int64_t>(i) * c.embed_dim, c.embed_dim);
        w.end_object();
      }
      w.end_array();
    }
    if (!images.empty() && !texts.empty()) {
      FloatTensor a = image_embeddings, b = text_embeddings;
      normalize_rows(a);
      normalize_rows(b);
      const float scale = std::exp(c.logit_scale);
      w.key("cosine").begin_array();
      std::vector<std::vector<double>> probabilities;
      for (std::int64_t i = 0; i < a.dim(0); ++i) {
        std::vector<double> cos(static_cast<std::size_t>(b.dim(0)));
        for (std::int64_t j = 0; j < b.dim(0); ++j) {
          double dot = 0;
          for (std::int64_t k = 0; k < c.embed_dim; ++k) dot += double(a.data()[i * c.embed_dim + k]) * b.data()[j * c.embed_dim + k];
          cos[static_cast<std::size_t>(j)] = dot;
        }
        w.begin_array();
        for (double v : cos) w.value(v);
        w.end_array();
        // CLIP's zero-shot probabilities: softmax over the texts of scale * cosine.
        const double top = *std::max_element(cos.begin(), cos.end());
        double sum = 0;
        for (double& v : cos) sum += (v = std::exp(scale * (v - top)));
        for (double& v : cos) v /= sum;
        probabilities.push_back(cos);
      }
      w.end_array();
      w.key("probabilities").begin_array();
      for (const auto& row : probabilities) {
        w.begin_array();
        for (double v : row) w.value(v);
        w.end_array();
      }
      w.end_array();
    }
    w.end_object();

    emit(w.str(), args.get("out"));
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) { return focuspatch::cli::guarded_main("focuspatch-embed", argc, argv, run); }
