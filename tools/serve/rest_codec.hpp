#pragma once
// The protocol's HTTP/REST body <-> InferRequest/InferResponse, with Triton's binary-data
// extension: when the header Inference-Header-Content-Length is present, the body is that many
// bytes of JSON followed by the tensors' raw bytes, each input naming its share with the
// parameter binary_data_size (BYTES elements each preceded by a 4-byte little-endian length).
//
// In JSON `data`, BYTES elements are strings; an encoded image is not text, so the `image` input's
// strings are base64. Bodies come from anyone: their size is capped by the HTTP front, and the
// number of JSON values is capped here before parsing, because a parsed value costs far more
// memory than its text (a 64 MiB body of "0," would otherwise become billions of bytes).
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "focuspatch/io/json.hpp"
#include "serve/tensors.hpp"

namespace focuspatch::serve {

inline constexpr const char* kBinaryHeader = "Inference-Header-Content-Length";
inline constexpr std::size_t kMaxJsonValues = 1 << 16;  // a request of 256 base64 images needs ~30

namespace rest_detail {

// Upper bound on the values in a JSON text: separators and openings outside strings.
inline std::size_t count_json_values(std::string_view text) {
  std::size_t n = 1;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == ',' || c == '[' || c == '{' || c == ':') {
      ++n;
    }
  }
  return n;
}

inline Parameters parse_parameters(const json::Value* v, const std::string& where) {
  Parameters out;
  if (!v) return out;
  if (!v->is_object()) refuse(Failure::BadRequest, where, " 'parameters' must be an object");
  for (const auto& [k, p] : v->as_object()) {
    if (p.is_bool()) out[k] = p.as_bool();
    else if (p.is_integer()) out[k] = p.as_int64();
    else if (p.is_string()) out[k] = p.as_string();
    else refuse(Failure::BadRequest, where, " parameter '", k, "' must be a boolean, an integer or a string");
  }
  return out;
}

inline void flatten_strings(const json::Value& v, std::vector<std::string>& out, const std::string& where) {
  if (v.is_array()) {
    for (const auto& item : v.as_array()) flatten_strings(item, out, where);
  } else if (v.is_string()) {
    out.push_back(v.as_string());
  } else {
    refuse(Failure::BadRequest, where, ": BYTES data must be strings, found a ", json::type_name(v.type()));
  }
}

inline void flatten_numbers(const json::Value& v, std::vector<float>& out, const std::string& where) {
  if (v.is_array()) {
    for (const auto& item : v.as_array()) flatten_numbers(item, out, where);
  } else if (v.is_number()) {
    out.push_back(static_cast<float>(v.as_double()));
  } else if (v.is_bool()) {
    out.push_back(v.as_bool() ? 1.0f : 0.0f);
  } else {
    refuse(Failure::BadRequest, where, ": numeric data must be numbers, found a ", json::type_name(v.type()));
  }
}

inline std::uint32_t read_le32(const char* p) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  return static_cast<std::uint32_t>(b[0]) | static_cast<std::uint32_t>(b[1]) << 8 | static_cast<std::uint32_t>(b[2]) << 16 |
         static_cast<std::uint32_t>(b[3]) << 24;
}

inline void append_le32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

}  // namespace rest_detail

// BYTES elements from their raw form: each a 4-byte little-endian length, then that many bytes.
inline std::vector<std::string> split_raw_bytes(std::string_view raw, const std::string& where) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < raw.size()) {
    if (raw.size() - at < 4) refuse(Failure::BadRequest, where, ": raw BYTES data ends inside an element's 4-byte length");
    const std::uint32_t n = rest_detail::read_le32(raw.data() + at);
    at += 4;
    if (n > raw.size() - at) refuse(Failure::BadRequest, where, ": a raw BYTES element claims ", n, " bytes, ", raw.size() - at, " remain");
    out.emplace_back(raw.substr(at, n));
    at += n;
  }
  return out;
}

inline std::string join_raw_bytes(const std::vector<std::string>& elements) {
  std::string out;
  for (const auto& e : elements) {
    rest_detail::append_le32(out, static_cast<std::uint32_t>(e.size()));
    out += e;
  }
  return out;
}

// The raw little-endian bytes of a numeric tensor (what the binary extension and gRPC's raw
// contents carry).
inline std::string raw_bytes(const Tensor& t) {
  if (const auto* s = std::get_if<std::vector<std::string>>(&t.data)) return join_raw_bytes(*s);
  if (const auto* f = std::get_if<std::vector<float>>(&t.data)) return std::string(reinterpret_cast<const char*>(f->data()), f->size() * 4);
  const auto& u = std::get<std::vector<std::uint8_t>>(t.data);
  return std::string(reinterpret_cast<const char*>(u.data()), u.size());
}

// model_name and model_version come from the URL. header_length: the binary extension's header,
// when the request carries it.
inline InferRequest parse_rest_request(std::string_view body, std::optional<std::size_t> header_length) {
  using rest_detail::parse_parameters;
  std::string_view text = body, binary;
  if (header_length) {
    if (*header_length > body.size())
      refuse(Failure::BadRequest, kBinaryHeader, " is ", *header_length, " but the body has only ", body.size(), " bytes");
    text = body.substr(0, *header_length);
    binary = body.substr(*header_length);
  }
  if (rest_detail::count_json_values(text) > kMaxJsonValues)
    refuse(Failure::TooLarge, "the request's JSON holds more than ", kMaxJsonValues, " values; send images as base64 strings or binary data");
  json::Value doc;
  try {
    doc = json::parse(text, "request body");
  } catch (const Error& e) {
    refuse(Failure::BadRequest, e.what());
  }
  InferRequest r;
  try {
    if (!doc.is_object()) refuse(Failure::BadRequest, "the request body must be a JSON object");
    if (const auto* id = doc.find("id")) {
      if (!id->is_string()) refuse(Failure::BadRequest, "'id' must be a string");
      r.id = id->as_string();
    }
    r.parameters = parse_parameters(doc.find("parameters"), "request");
    const auto* inputs = doc.find("inputs");
    if (!inputs || !inputs->is_array()) refuse(Failure::BadRequest, "the request needs 'inputs', an array of tensors");
    std::size_t binary_at = 0;
    for (std::size_t i = 0; i < inputs->size(); ++i) {
      const auto& in = (*inputs)[i];
      const std::string where = "input " + std::to_string(i);
      if (!in.is_object()) refuse(Failure::BadRequest, where, " must be an object");
      Tensor t;
      const auto* name = in.find("name");
      const auto* datatype = in.find("datatype");
      const auto* shape = in.find("shape");
      if (!name || !name->is_string()) refuse(Failure::BadRequest, where, " needs a string 'name'");
      if (!datatype || !datatype->is_string()) refuse(Failure::BadRequest, where, " needs a string 'datatype'");
      if (!shape || !shape->is_array()) refuse(Failure::BadRequest, where, " needs 'shape', an array of integers");
      t.name = name->as_string();
      t.datatype = datatype->as_string();
      for (const auto& d : shape->as_array()) {
        if (!d.is_integer() || d.as_int64() < 0) refuse(Failure::BadRequest, where, " 'shape' must hold non-negative integers");
        t.shape.push_back(d.as_int64());
      }
      const std::int64_t count = element_count(t.shape);
      t.parameters = parse_parameters(in.find("parameters"), where);
      const std::string named = "input '" + t.name + "'";
      if (const auto size = int_parameter(t.parameters, "binary_data_size")) {
        if (in.contains("data")) refuse(Failure::BadRequest, named, " has both 'data' and binary_data_size");
        if (!header_length) refuse(Failure::BadRequest, named, " has binary_data_size but the request lacks the ", kBinaryHeader, " header");
        if (*size < 0 || static_cast<std::size_t>(*size) > binary.size() - binary_at)
          refuse(Failure::BadRequest, named, " binary_data_size ", *size, " runs past the body's end");
        const std::string_view raw = binary.substr(binary_at, static_cast<std::size_t>(*size));
        binary_at += static_cast<std::size_t>(*size);
        if (t.datatype == "BYTES") t.data = split_raw_bytes(raw, named);
        else if (t.datatype == "FP32" && raw.size() % 4 == 0) {
          std::vector<float> v(raw.size() / 4);
          std::memcpy(v.data(), raw.data(), raw.size());
          t.data = std::move(v);
        } else {
          t.data = std::vector<std::uint8_t>(raw.begin(), raw.end());
        }
      } else {
        const auto* data = in.find("data");
        if (!data) refuse(Failure::BadRequest, named, " has neither 'data' nor binary_data_size");
        if (t.datatype == "BYTES") {
          std::vector<std::string> v;
          rest_detail::flatten_strings(*data, v, named);
          t.data = std::move(v);
          t.parameters["focuspatch.base64"] = true;  // JSON text: base64 (see above)
        } else {
          std::vector<float> v;
          rest_detail::flatten_numbers(*data, v, named);
          t.data = std::move(v);
        }
      }
      const std::size_t have = std::visit([](const auto& v) { return v.size(); }, t.data);
      if (t.datatype == "BYTES" && static_cast<std::int64_t>(have) != count)
        refuse(Failure::BadRequest, named, ": shape says ", count, " elements, the data holds ", have);
      r.inputs.push_back(std::move(t));
    }
    if (header_length && binary_at != binary.size())
      refuse(Failure::BadRequest, "the body has ", binary.size() - binary_at, " bytes of binary data that no input claims");
    if (const auto* outputs = doc.find("outputs")) {
      if (!outputs->is_array()) refuse(Failure::BadRequest, "'outputs' must be an array");
      for (const auto& o : outputs->as_array()) {
        const auto* name = o.find("name");
        if (!o.is_object() || !name || !name->is_string()) refuse(Failure::BadRequest, "each of 'outputs' needs a string 'name'");
        r.outputs.push_back({name->as_string(), parse_parameters(o.find("parameters"), "output '" + name->as_string() + "'")});
      }
    }
  } catch (const ProtocolError&) {
    throw;
  } catch (const Error& e) {  // a JSON accessor's complaint
    refuse(Failure::BadRequest, e.what());
  }
  return r;
}

struct RestBody {
  std::string body;
  std::optional<std::size_t> header_length;  // set: the binary extension's header to send
};

// Outputs go as binary data when the request parameter binary_data_output is true or the output
// asked for it with its binary_data parameter (what Triton's clients do by default).
inline RestBody write_rest_response(const InferResponse& response, const InferRequest& request) {
  const bool all_binary = bool_parameter(request.parameters, "binary_data_output").value_or(false);
  auto binary_for = [&](const std::string& name) {
    for (const auto& o : request.outputs)
      if (o.name == name) return bool_parameter(o.parameters, "binary_data").value_or(all_binary);
    return all_binary;
  };
  json::Writer w;
  std::string blobs;
  w.begin_object().member("model_name", response.model_name).member("model_version", response.model_version);
  if (!response.id.empty()) w.member("id", response.id);
  w.key("outputs").begin_array();
  for (const auto& t : response.outputs) {
    w.begin_object().member("name", t.name).member("datatype", t.datatype).key("shape").begin_array();
    for (auto d : t.shape) w.value(d);
    w.end_array();
    if (binary_for(t.name)) {
      const std::string raw = raw_bytes(t);
      w.key("parameters").begin_object().member("binary_data_size", raw.size()).end_object();
      blobs += raw;
    } else {
      w.key("data").begin_array();
      if (t.datatype == "BOOL")  // one byte per element in memory, true/false in JSON
        for (auto b : std::get<std::vector<std::uint8_t>>(t.data)) w.value(b != 0);
      else
        std::visit([&](const auto& v) { for (const auto& x : v) w.value(x); }, t.data);
      w.end_array();
    }
    w.end_object();
  }
  w.end_array().end_object();
  RestBody out{w.str(), std::nullopt};
  if (!blobs.empty()) {
    out.header_length = out.body.size();
    out.body += blobs;
  }
  return out;
}

inline std::string error_body(const std::string& message) {
  json::Writer w;
  w.begin_object().member("error", message).end_object();
  return w.str();
}

inline std::string metadata_body(const ModelMetadata& m, const std::string& description) {
  json::Writer w;
  w.begin_object().member("name", m.name).key("versions").begin_array().value(m.version).end_array().member("platform", m.platform);
  auto tensors = [&](const char* key, const std::vector<TensorMetadata>& list) {
    w.key(key).begin_array();
    for (const auto& t : list) {
      w.begin_object().member("name", t.name).member("datatype", t.datatype).key("shape").begin_array();
      for (auto d : t.shape) w.value(d);
      w.end_array().end_object();
    }
    w.end_array();
  };
  tensors("inputs", m.inputs);
  tensors("outputs", m.outputs);
  w.member("description", description).end_object();
  return w.str();
}

}  // namespace focuspatch::serve
