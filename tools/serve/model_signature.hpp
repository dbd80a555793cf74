#pragma once
// The detector's face on the Open Inference Protocol: its input and output tensors, the metadata
// that announces them, turning the `image` input into decoded images and, in ONE place
// (detection_outputs), a batch of Detections into output tensors. Both fronts use only this, so
// an output added here (say a verdict once memory banks carry a calibration) appears on HTTP and
// gRPC alike and in the metadata.
//
// Not served: `normalized_score`, `anomalous`, `regions` and `mask`. They need a calibration
// stored with the memory bank (a normal-score scale and a threshold), which this build's Detector
// does not provide; the server leaves them out rather than invent values.
#include <algorithm>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "focuspatch/anomaly/anomaly_map.hpp"
#include "focuspatch/anomaly/detector.hpp"
#include "focuspatch/io/image.hpp"
#include "serve/tensors.hpp"

namespace focuspatch::serve {

inline constexpr const char* kImageInput = "image";
inline constexpr const char* kAnomalyMapOutput = "anomaly_map";
// Request parameter asking for the anomaly map besides the default outputs.
inline constexpr const char* kAnomalyMapParameter = "anomaly_map";

inline std::vector<TensorMetadata> model_outputs() {
  return {
      {"score", "FP32", {-1}},           // image anomaly score per image (higher: more anomalous)
      {"category", "BYTES", {-1}},       // category the image was routed to
      {"top_keyword", "BYTES", {-1}},    // most relevant anomaly keyword ("" when none)
      {kAnomalyMapOutput, "FP32", {-1, -1, -1}},  // [N, H, W] at the images' size; on request only
  };
}

inline ModelMetadata model_metadata(const std::string& name) {
  return {name, "1", "focuspatch", {{kImageInput, "BYTES", {-1}}}, model_outputs()};
}

inline constexpr const char* kModelDescription =
    "input 'image': BYTES [N] (or [N,1]), each element one encoded image file (PNG, JPEG, BMP, ...); base64 text in JSON "
    "'data', raw bytes with the binary-data extension or gRPC. Outputs score FP32 [N], category BYTES [N], top_keyword BYTES "
    "[N], and anomaly_map FP32 [N,H,W] when the request parameter anomaly_map is true or the output is named. "
    "normalized_score, anomalous, regions and mask are not served: they need a calibrated memory bank.";

// Which outputs a request gets: those it names, else the default ones (plus the anomaly map when
// the request parameter asks for it). Unknown names are an error, not silently dropped.
inline std::set<std::string> selected_outputs(const InferRequest& request) {
  std::set<std::string> known;
  for (const auto& m : model_outputs()) known.insert(m.name);
  std::set<std::string> out;
  for (const auto& o : request.outputs) {
    if (!known.count(o.name)) refuse(Failure::BadRequest, "unknown output '", o.name, "' (the model has score, category, top_keyword, anomaly_map)");
    out.insert(o.name);
  }
  if (out.empty()) out = {"score", "category", "top_keyword"};
  if (bool_parameter(request.parameters, kAnomalyMapParameter).value_or(false)) out.insert(kAnomalyMapOutput);
  return out;
}

namespace detail {
inline std::string decode_base64(const std::string& text, std::size_t element) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;  // standard and URL-safe alphabets
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  std::uint32_t acc = 0;
  int bits = 0;
  std::size_t i = 0;
  for (; i < text.size() && text[i] != '='; ++i) {
    const int v = value(text[i]);
    if (v < 0) refuse(Failure::BadRequest, "input 'image' element ", element, ": not base64 (byte ", i, ")");
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  for (; i < text.size(); ++i)
    if (text[i] != '=') refuse(Failure::BadRequest, "input 'image' element ", element, ": data after base64 padding");
  return out;
}
}  // namespace detail

// The images of the request's `image` input, decoded (refusing any over the pixel limit before it
// is allocated). base64: the elements are base64 text (JSON `data`); else raw file bytes.
inline std::vector<Image> request_images(const InferRequest& request, const ImageLoadOptions& limits) {
  const Tensor* input = nullptr;
  for (const auto& t : request.inputs) {
    if (t.name != kImageInput) refuse(Failure::BadRequest, "unknown input '", t.name, "' (the model takes one input, 'image')");
    if (input) refuse(Failure::BadRequest, "input 'image' is given twice");
    input = &t;
  }
  if (!input) refuse(Failure::BadRequest, "the request has no input 'image'");
  if (input->datatype != "BYTES") refuse(Failure::BadRequest, "input 'image' must be BYTES (encoded image files), not ", input->datatype);
  const auto& shape = input->shape;
  if (!(shape.size() == 1 || (shape.size() == 2 && shape[1] == 1)))
    refuse(Failure::BadRequest, "input 'image' must have shape [N] or [N, 1], one element per image");
  const auto* elements = std::get_if<std::vector<std::string>>(&input->data);
  if (!elements || static_cast<std::int64_t>(elements->size()) != element_count(shape))
    refuse(Failure::BadRequest, "input 'image': shape says ", element_count(shape), " elements, the data holds ",
           elements ? elements->size() : 0);
  if (elements->empty()) refuse(Failure::BadRequest, "input 'image' holds no images");
  const bool base64 = bool_parameter(input->parameters, "focuspatch.base64").value_or(false);
  std::vector<Image> images;
  images.reserve(elements->size());
  for (std::size_t i = 0; i < elements->size(); ++i) {
    const std::string bytes = base64 ? detail::decode_base64((*elements)[i], i) : std::string();
    const std::string& file = base64 ? bytes : (*elements)[i];
    try {
      images.push_back(decode_image(std::as_bytes(std::span(file.data(), file.size())), "image " + std::to_string(i), limits));
    } catch (const Error& e) {
      refuse(Failure::BadRequest, e.what());
    }
  }
  return images;
}

// The size of a request's images (one size, when an output at the image's size is wanted).
struct ImageSize {
  std::int64_t height = 0, width = 0;
};

// THE mapping from detections to the protocol's output tensors (only those in `wanted`).
// size: the request's image size, for the anomaly map at the image's own size as
// focuspatch-detect writes it.
inline std::vector<Tensor> detection_outputs(std::span<const Detection> detections, ImageSize size, const std::set<std::string>& wanted) {
  const auto n = static_cast<std::int64_t>(detections.size());
  std::vector<Tensor> out;
  if (wanted.count("score")) {
    std::vector<float> v;
    for (const auto& d : detections) v.push_back(d.image_score);
    out.push_back({"score", "FP32", {n}, {}, std::move(v)});
  }
  if (wanted.count("category")) {
    std::vector<std::string> v;
    for (const auto& d : detections) v.push_back(d.route.category);
    out.push_back({"category", "BYTES", {n}, {}, std::move(v)});
  }
  if (wanted.count("top_keyword")) {
    std::vector<std::string> v;
    for (const auto& d : detections) v.push_back(d.top_keywords.empty() ? std::string() : d.top_keywords.front().name);
    out.push_back({"top_keyword", "BYTES", {n}, {}, std::move(v)});
  }
  if (wanted.count(kAnomalyMapOutput)) {
    const std::int64_t h = size.height, w = size.width;
    std::vector<float> v;
    v.reserve(static_cast<std::size_t>(n * h * w));
    for (std::size_t i = 0; i < detections.size(); ++i) {
      const AnomalyMap map = upsample_bilinear(detections[i].map, h, w);
      v.insert(v.end(), map.values.begin(), map.values.end());
    }
    out.push_back({kAnomalyMapOutput, "FP32", {n, h, w}, {}, std::move(v)});
  }
  return out;
}

// Checked before the images queue up, so a request that cannot be answered does not cost a pass.
inline void check_outputs_possible(std::span<const Image> images, const std::set<std::string>& wanted) {
  if (!wanted.count(kAnomalyMapOutput)) return;
  for (const auto& im : images)
    if (im.width != images.front().width || im.height != images.front().height)
      refuse(Failure::BadRequest, "anomaly_map [N, H, W] needs images of one size; this request mixes ", images.front().width, "x",
             images.front().height, " and ", im.width, "x", im.height, " (send them in separate requests)");
}

}  // namespace focuspatch::serve
