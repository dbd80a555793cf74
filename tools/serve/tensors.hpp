#pragma once
// The Open Inference Protocol's request and response, independent of how they travel: the HTTP
// front (rest_codec.hpp) and the gRPC front (grpc_front.hpp) translate to and from these, so the
// model service sees one kind of request whatever the client spoke.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "focuspatch/core/error.hpp"

namespace focuspatch::serve {

// What went wrong, in the protocol's terms; each front maps it to its status codes.
enum class Failure {
  BadRequest,   // malformed or invalid request: HTTP 400, gRPC INVALID_ARGUMENT
  NotFound,     // no such model or version: 404, NOT_FOUND
  TooLarge,     // body or image over a limit: 413, RESOURCE_EXHAUSTED / INVALID_ARGUMENT
  Overloaded,   // the queue is full: 503, RESOURCE_EXHAUSTED
  Timeout,      // the request's deadline passed before it ran: 504, DEADLINE_EXCEEDED
  Unavailable,  // shutting down or not ready: 503, UNAVAILABLE
  Internal,     // the model failed: 500, INTERNAL
};

class ProtocolError : public Error {
 public:
  ProtocolError(Failure failure, const std::string& message) : Error(message), failure_(failure) {}
  Failure failure() const { return failure_; }

 private:
  Failure failure_;
};

template <class... Parts>
[[noreturn]] void refuse(Failure failure, const Parts&... parts) {
  throw ProtocolError(failure, detail::concat(parts...));
}

inline int http_status(Failure f) {
  switch (f) {
    case Failure::BadRequest: return 400;
    case Failure::NotFound: return 404;
    case Failure::TooLarge: return 413;
    case Failure::Overloaded: return 503;
    case Failure::Timeout: return 504;
    case Failure::Unavailable: return 503;
    case Failure::Internal: return 500;
  }
  return 500;
}

// A request or tensor parameter: the protocol allows booleans, integers and strings.
using Parameter = std::variant<bool, std::int64_t, std::string>;
using Parameters = std::map<std::string, Parameter>;

inline std::optional<bool> bool_parameter(const Parameters& p, const std::string& name) {
  auto it = p.find(name);
  if (it == p.end()) return std::nullopt;
  if (const bool* b = std::get_if<bool>(&it->second)) return *b;
  refuse(Failure::BadRequest, "parameter '", name, "' must be a boolean");
}
inline std::optional<std::int64_t> int_parameter(const Parameters& p, const std::string& name) {
  auto it = p.find(name);
  if (it == p.end()) return std::nullopt;
  if (const auto* i = std::get_if<std::int64_t>(&it->second)) return *i;
  refuse(Failure::BadRequest, "parameter '", name, "' must be an integer");
}

// A tensor's elements: BYTES elements as strings, numeric ones as a typed vector; BOOL and UINT8
// as bytes (BOOL: 0 or 1, one byte per element as the binary formats carry it).
using TensorData = std::variant<std::vector<std::string>, std::vector<float>, std::vector<std::uint8_t>>;

struct Tensor {
  std::string name;
  std::string datatype;  // "BYTES", "FP32", "UINT8", ... as the protocol spells them
  std::vector<std::int64_t> shape;
  Parameters parameters;
  TensorData data;
};

inline std::int64_t element_count(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (std::int64_t d : shape) {
    if (d < 0 || (d > 0 && n > (std::int64_t{1} << 40) / d)) refuse(Failure::BadRequest, "tensor shape has a negative or huge dimension");
    n *= d;
  }
  return n;
}

struct RequestedOutput {
  std::string name;
  Parameters parameters;
};

struct InferRequest {
  std::string id;
  std::string model_name, model_version;
  Parameters parameters;
  std::vector<Tensor> inputs;
  std::vector<RequestedOutput> outputs;  // empty: the model's default outputs
};

struct InferResponse {
  std::string id;
  std::string model_name, model_version;
  std::vector<Tensor> outputs;
};

// The model's metadata, as both fronts report it.
struct TensorMetadata {
  std::string name, datatype;
  std::vector<std::int64_t> shape;  // -1: any size
};
struct ModelMetadata {
  std::string name, version, platform;
  std::vector<TensorMetadata> inputs, outputs;
};

}  // namespace focuspatch::serve
