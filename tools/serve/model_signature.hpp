#pragma once
// The detector's face on the Open Inference Protocol: its input and output tensors, the metadata
// that announces them, turning the `image` input into decoded images and, in ONE place
// (detection_outputs), a batch of Detections into output tensors. Both fronts use only this, so
// an output added here appears on HTTP and gRPC alike and in the metadata.
//
// The decisions come from the calibration stored in the memory bank (anomaly/calibration.hpp).
// An image whose category the bank holds uncalibrated gets no invented answer: `verdict` says
// "uncalibrated", `normalized_score` is NaN (null in JSON, which has no NaN), `anomalous` is false
// only because BOOL has no third value (read `verdict` to tell), `regions` is "[]", and a request
// for `mask` is refused, since an all-zero mask would read as "no defect".
#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "common/decision_output.hpp"
#include "focuspatch/anomaly/anomaly_map.hpp"
#include "focuspatch/anomaly/detector.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/json.hpp"
#include "serve/tensors.hpp"

namespace focuspatch::serve {

inline constexpr const char* kImageInput = "image";
inline constexpr const char* kAnomalyMapOutput = "anomaly_map";
inline constexpr const char* kMaskOutput = "mask";
// Request parameters asking for the outputs at the image's size besides the default ones (they
// are N x H x W values, too many to send unasked). Named like the outputs.
inline constexpr const char* kAnomalyMapParameter = "anomaly_map";
inline constexpr const char* kMaskParameter = "mask";

// Every output, in the order the metadata lists them and responses carry them.
inline std::vector<TensorMetadata> model_outputs() {
  return {
      {"score", "FP32", {-1}},             // raw image anomaly score (higher: more anomalous)
      {"normalized_score", "FP32", {-1}},  // 0.5 = the category's image threshold; NaN (JSON null) uncalibrated
      {"anomalous", "BOOL", {-1}},         // score above the threshold; false when uncalibrated (see verdict)
      {"verdict", "BYTES", {-1}},          // "anomalous", "normal" or "uncalibrated"
      {"category", "BYTES", {-1}},         // category the image was routed to
      {"top_keyword", "BYTES", {-1}},      // most relevant anomaly keyword ("" when none)
      {"regions", "BYTES", {-1}},          // JSON text per image: the defect regions, as focuspatch-detect's results.json
      {kAnomalyMapOutput, "FP32", {-1, -1, -1}},  // [N, H, W] at the images' size; on request only
      {kMaskOutput, "UINT8", {-1, -1, -1}},       // [N, H, W], 1 = above the pixel threshold; on request only
  };
}

inline bool on_request_only(const std::string& output) { return output == kAnomalyMapOutput || output == kMaskOutput; }

inline ModelMetadata model_metadata(const std::string& name) {
  return {name, "1", "focuspatch", {{kImageInput, "BYTES", {-1}}}, model_outputs()};
}

inline constexpr const char* kModelDescription =
    "input 'image': BYTES [N] (or [N,1]), each element one encoded image file (PNG, JPEG, BMP, ...); base64 text in JSON "
    "'data', raw bytes with the binary-data extension or gRPC. Outputs score FP32 [N] (raw), normalized_score FP32 [N] "
    "(0.5 = the category's calibrated image threshold; NaN, in JSON null, when the category is uncalibrated), anomalous BOOL "
    "[N] (false also when uncalibrated: read verdict), verdict BYTES [N] (anomalous, normal or uncalibrated), category "
    "BYTES [N], top_keyword BYTES [N], regions BYTES [N] (JSON text: [{x, y, width, height, area, peak_score, mean_score, "
    "keyword, keyword_overlap}] in image pixels, [] when none or uncalibrated); on request (parameter anomaly_map / mask true, "
    "or the output named) anomaly_map FP32 [N,H,W] and mask UINT8 [N,H,W] (1 = above the pixel threshold; refused for an "
    "uncalibrated category) at the images' size.";

// Which outputs a request gets: those it names, else the default ones (plus the anomaly map and
// mask when the request parameters ask for them). Unknown names are an error, not silently dropped.
inline std::set<std::string> selected_outputs(const InferRequest& request) {
  std::set<std::string> known;
  std::string names;
  for (const auto& m : model_outputs()) {
    known.insert(m.name);
    names += (names.empty() ? "" : ", ") + m.name;
  }
  std::set<std::string> out;
  for (const auto& o : request.outputs) {
    if (!known.count(o.name)) refuse(Failure::BadRequest, "unknown output '", o.name, "' (the model has ", names, ")");
    out.insert(o.name);
  }
  if (out.empty())
    for (const auto& name : known)
      if (!on_request_only(name)) out.insert(name);
  if (bool_parameter(request.parameters, kAnomalyMapParameter).value_or(false)) out.insert(kAnomalyMapOutput);
  if (bool_parameter(request.parameters, kMaskParameter).value_or(false)) out.insert(kMaskOutput);
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

// THE mapping from detections to the protocol's output tensors (only those in `wanted`, in
// model_outputs()'s order). size: the request's image size, for the anomaly map and mask at the
// image's own size as focuspatch-detect writes them.
inline std::vector<Tensor> detection_outputs(std::span<const Detection> detections, ImageSize size, const std::set<std::string>& wanted) {
  const auto n = static_cast<std::int64_t>(detections.size());
  const std::int64_t h = size.height, w = size.width;
  std::vector<Tensor> out;
  auto per_image_float = [&](const char* name, auto value) {
    std::vector<float> v;
    for (const auto& d : detections) v.push_back(value(d));
    out.push_back({name, "FP32", {n}, {}, std::move(v)});
  };
  auto per_image_text = [&](const char* name, auto value) {
    std::vector<std::string> v;
    for (const auto& d : detections) v.push_back(value(d));
    out.push_back({name, "BYTES", {n}, {}, std::move(v)});
  };
  for (const auto& output : model_outputs()) {
    const std::string& name = output.name;
    if (!wanted.count(name)) continue;
    if (name == "score") {
      per_image_float("score", [](const Detection& d) { return d.image_score; });
    } else if (name == "normalized_score") {
      per_image_float("normalized_score",
                      [](const Detection& d) { return d.normalized_score.value_or(std::numeric_limits<float>::quiet_NaN()); });
    } else if (name == "anomalous") {
      std::vector<std::uint8_t> v;  // BOOL travels as one byte per element
      for (const auto& d : detections) v.push_back(d.verdict == Verdict::Anomalous ? 1 : 0);
      out.push_back({name, "BOOL", {n}, {}, std::move(v)});
    } else if (name == "verdict") {
      per_image_text("verdict", [](const Detection& d) { return std::string(verdict_name(d.verdict)); });
    } else if (name == "category") {
      per_image_text("category", [](const Detection& d) { return d.route.category; });
    } else if (name == "top_keyword") {
      per_image_text("top_keyword", [](const Detection& d) { return d.top_keywords.empty() ? std::string() : d.top_keywords.front().name; });
    } else if (name == "regions") {
      per_image_text("regions", [](const Detection& d) {
        json::Writer writer;
        tools::write_regions(writer, d.regions);  // focuspatch-detect's writer: one format for both programs
        return writer.str();
      });
    } else if (name == kAnomalyMapOutput) {
      std::vector<float> v;
      v.reserve(static_cast<std::size_t>(n * h * w));
      for (const auto& d : detections) {
        const AnomalyMap map = upsample_bilinear(d.map, h, w);
        v.insert(v.end(), map.values.begin(), map.values.end());
      }
      out.push_back({name, "FP32", {n, h, w}, {}, std::move(v)});
    } else if (name == kMaskOutput) {
      std::vector<std::uint8_t> v;
      v.reserve(static_cast<std::size_t>(n * h * w));
      for (std::size_t i = 0; i < detections.size(); ++i) {
        const Detection& d = detections[i];
        if (d.mask.empty())
          refuse(Failure::BadRequest, "mask: image ", i, " was routed to '", d.route.category, "', which the memory bank holds uncalibrated ",
                 "(no pixel threshold; calibrate it with focuspatch-detect --calibration, or build it from 2 or more shots)");
        if (d.mask_width != w || d.mask_height != h)
          refuse(Failure::Internal, "mask: image ", i, " has a ", d.mask_width, "x", d.mask_height, " mask, the request's images are ", w, "x", h);
        v.insert(v.end(), d.mask.begin(), d.mask.end());
      }
      out.push_back({name, "UINT8", {n, h, w}, {}, std::move(v)});
    } else {
      refuse(Failure::Internal, "output '", name, "' is announced but not produced");
    }
  }
  return out;
}

// Checked before the images queue up, so a request that cannot be answered does not cost a pass.
inline void check_outputs_possible(std::span<const Image> images, const std::set<std::string>& wanted) {
  if (!wanted.count(kAnomalyMapOutput) && !wanted.count(kMaskOutput)) return;
  for (const auto& im : images)
    if (im.width != images.front().width || im.height != images.front().height)
      refuse(Failure::BadRequest, "anomaly_map and mask [N, H, W] need images of one size; this request mixes ", images.front().width, "x",
             images.front().height, " and ", im.width, "x", im.height, " (send them in separate requests)");
}

}  // namespace focuspatch::serve
