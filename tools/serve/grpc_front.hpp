#pragma once
// The protocol over gRPC: GRPCInferenceService from grpc_predict_v2.proto (KServe's messages, plus
// Triton's RepositoryModelLoad for reloading the bank), on gRPC's synchronous server.
//
// Tensor data may come as typed contents (bytes_contents for BYTES) or as raw_input_contents;
// the answer uses the same form the request did, so KServe clients reading `contents` and Triton
// clients reading raw_output_contents both get what they parse. A malformed protobuf never reaches
// this code (gRPC answers it); messages over --max-body-bytes are refused by gRPC
// (RESOURCE_EXHAUSTED).
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "grpc_predict_v2.grpc.pb.h"
#include "serve/model_service.hpp"
#include "serve/rest_codec.hpp"

namespace focuspatch::serve {

inline grpc::StatusCode grpc_code(Failure f) {
  switch (f) {
    case Failure::BadRequest: return grpc::StatusCode::INVALID_ARGUMENT;
    case Failure::NotFound: return grpc::StatusCode::NOT_FOUND;
    case Failure::TooLarge: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Failure::Overloaded: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Failure::Timeout: return grpc::StatusCode::DEADLINE_EXCEEDED;
    case Failure::Unavailable: return grpc::StatusCode::UNAVAILABLE;
    case Failure::Internal: return grpc::StatusCode::INTERNAL;
  }
  return grpc::StatusCode::INTERNAL;
}

inline const char* grpc_code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    default: return "OTHER";
  }
}

namespace grpc_detail {

template <class Map>
Parameters parameters_from(const Map& map) {
  Parameters out;
  for (const auto& [k, p] : map) {
    switch (p.parameter_choice_case()) {
      case inference::InferParameter::kBoolParam: out[k] = p.bool_param(); break;
      case inference::InferParameter::kInt64Param: out[k] = static_cast<std::int64_t>(p.int64_param()); break;
      case inference::InferParameter::kStringParam: out[k] = p.string_param(); break;
      default: break;
    }
  }
  return out;
}

inline InferRequest request_from(const inference::ModelInferRequest& m) {
  InferRequest r;
  r.id = m.id();
  r.model_name = m.model_name();
  r.model_version = m.model_version();
  r.parameters = parameters_from(m.parameters());
  const bool raw = m.raw_input_contents_size() > 0;
  if (raw && m.raw_input_contents_size() != m.inputs_size())
    refuse(Failure::BadRequest, "raw_input_contents has ", m.raw_input_contents_size(), " entries for ", m.inputs_size(), " inputs");
  for (int i = 0; i < m.inputs_size(); ++i) {
    const auto& in = m.inputs(i);
    Tensor t;
    t.name = in.name();
    t.datatype = in.datatype();
    t.shape.assign(in.shape().begin(), in.shape().end());
    for (auto d : t.shape)
      if (d < 0) refuse(Failure::BadRequest, "input '", t.name, "' shape has a negative dimension");
    t.parameters = parameters_from(in.parameters());
    if (raw) {
      if (in.has_contents()) refuse(Failure::BadRequest, "input '", t.name, "' has contents although raw_input_contents is used");
      if (t.datatype == "BYTES") t.data = split_raw_bytes(m.raw_input_contents(i), "input '" + t.name + "'");
      else t.data = std::vector<std::uint8_t>(m.raw_input_contents(i).begin(), m.raw_input_contents(i).end());
    } else if (t.datatype == "BYTES") {
      t.data = std::vector<std::string>(in.contents().bytes_contents().begin(), in.contents().bytes_contents().end());
    } else {
      t.data = std::vector<float>(in.contents().fp32_contents().begin(), in.contents().fp32_contents().end());
    }
    r.inputs.push_back(std::move(t));
  }
  for (const auto& o : m.outputs()) r.outputs.push_back({o.name(), parameters_from(o.parameters())});
  return r;
}

inline void response_to(const InferResponse& r, bool raw, inference::ModelInferResponse& m) {
  m.set_model_name(r.model_name);
  m.set_model_version(r.model_version);
  m.set_id(r.id);
  for (const auto& t : r.outputs) {
    auto* out = m.add_outputs();
    out->set_name(t.name);
    out->set_datatype(t.datatype);
    for (auto d : t.shape) out->add_shape(d);
    if (raw) {
      m.add_raw_output_contents(raw_bytes(t));
    } else if (const auto* s = std::get_if<std::vector<std::string>>(&t.data)) {
      for (const auto& e : *s) out->mutable_contents()->add_bytes_contents(e);
    } else if (const auto* f = std::get_if<std::vector<float>>(&t.data)) {
      out->mutable_contents()->mutable_fp32_contents()->Add(f->begin(), f->end());
    } else if (t.datatype == "BOOL") {
      for (auto b : std::get<std::vector<std::uint8_t>>(t.data)) out->mutable_contents()->add_bool_contents(b != 0);
    } else {
      for (auto u : std::get<std::vector<std::uint8_t>>(t.data)) out->mutable_contents()->add_uint_contents(u);
    }
  }
}

inline void fill_tensor_metadata(const TensorMetadata& t, inference::ModelMetadataResponse::TensorMetadata* m) {
  m->set_name(t.name);
  m->set_datatype(t.datatype);
  for (auto d : t.shape) m->add_shape(d);
}

}  // namespace grpc_detail

template <class ServedModel>
class GrpcFront final : public inference::GRPCInferenceService::Service {
 public:
  GrpcFront(ServedModel& service, std::string server_version) : model_(service), version_(std::move(server_version)) {}

  // Starts serving on host:port (0: any free port); returns the port bound, or throws.
  // max_threads bounds the threads the synchronous server runs calls on (each call in ModelInfer
  // holds one while its images wait); calls beyond it are refused with RESOURCE_EXHAUSTED.
  int start(const std::string& host, int port, std::size_t max_message_bytes, int max_threads) {
    grpc::ServerBuilder builder;
    grpc::ResourceQuota quota("focuspatch-serve");
    quota.SetMaxThreads(max_threads);
    builder.SetResourceQuota(quota);
    int bound = 0;
    builder.AddListeningPort(host + ":" + std::to_string(port), grpc::InsecureServerCredentials(), &bound);
    builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<std::size_t>(max_message_bytes, 0x7fffffff)));
    builder.SetMaxSendMessageSize(0x7fffffff);
    builder.RegisterService(this);
    grpc_server_ = builder.BuildAndStart();
    require(grpc_server_ && bound > 0, "cannot listen on grpc ", host, ":", port, " (in use, or not an address of this machine)");
    return bound;
  }
  // Stops taking calls; waits up to `grace` for the running ones to finish.
  void stop(std::chrono::seconds grace) {
    if (grpc_server_) grpc_server_->Shutdown(std::chrono::system_clock::now() + grace);
  }
  void wait() {
    if (grpc_server_) grpc_server_->Wait();
  }

  grpc::Status ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*, inference::ServerLiveResponse* r) override {
    r->set_live(true);
    return counted("live", grpc::Status::OK);
  }
  grpc::Status ServerReady(grpc::ServerContext*, const inference::ServerReadyRequest*, inference::ServerReadyResponse* r) override {
    r->set_ready(model_.ready());
    return counted("ready", grpc::Status::OK);
  }
  grpc::Status ModelReady(grpc::ServerContext*, const inference::ModelReadyRequest* q, inference::ModelReadyResponse* r) override {
    if (!model_.serves(q->name(), q->version())) return counted("model_ready", not_found(q->name()));
    r->set_ready(model_.ready());
    return counted("model_ready", grpc::Status::OK);
  }
  grpc::Status ServerMetadata(grpc::ServerContext*, const inference::ServerMetadataRequest*, inference::ServerMetadataResponse* r) override {
    r->set_name("focuspatch-serve");
    r->set_version(version_);
    r->add_extensions("binary_tensor_data");
    r->add_extensions("model_repository");
    return counted("server_metadata", grpc::Status::OK);
  }
  grpc::Status ModelMetadata(grpc::ServerContext*, const inference::ModelMetadataRequest* q, inference::ModelMetadataResponse* r) override {
    if (!model_.serves(q->name(), q->version())) return counted("model_metadata", not_found(q->name()));
    const auto& m = model_.metadata();
    r->set_name(m.name);
    r->add_versions(m.version);
    r->set_platform(m.platform);
    for (const auto& t : m.inputs) grpc_detail::fill_tensor_metadata(t, r->add_inputs());
    for (const auto& t : m.outputs) grpc_detail::fill_tensor_metadata(t, r->add_outputs());
    return counted("model_metadata", grpc::Status::OK);
  }
  grpc::Status RepositoryModelLoad(grpc::ServerContext*, const inference::RepositoryModelLoadRequest* q,
                                   inference::RepositoryModelLoadResponse*) override {
    if (!model_.serves(q->model_name(), "")) return counted("repository_load", not_found(q->model_name()));
    try {
      model_.reload();
    } catch (const std::exception& e) {
      return counted("repository_load", grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                                     std::string("reload failed, the previous memory bank keeps serving: ") + e.what()));
    }
    return counted("repository_load", grpc::Status::OK);
  }

  grpc::Status ModelInfer(grpc::ServerContext* context, const inference::ModelInferRequest* q, inference::ModelInferResponse* r) override {
    const auto start = Clock::now();
    std::size_t images = 0;
    grpc::Status status = grpc::Status::OK;
    std::string error;
    try {
      const InferRequest request = grpc_detail::request_from(*q);
      for (const auto& t : request.inputs) images += std::visit([](const auto& v) { return v.size(); }, t.data);
      // The client's deadline, on the steady clock the queue uses.
      Clock::time_point deadline = Clock::time_point::max();
      const auto client = context->deadline();
      if (client < std::chrono::system_clock::now() + std::chrono::hours(24 * 365))
        deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(client - std::chrono::system_clock::now());
      const InferResponse response = model_.infer(request, deadline);
      grpc_detail::response_to(response, q->raw_input_contents_size() > 0, *r);
    } catch (const ProtocolError& e) {
      status = grpc::Status(grpc_code(e.failure()), e.what());
      error = e.what();
    } catch (const std::exception& e) {
      status = grpc::Status(grpc::StatusCode::INTERNAL, std::string("internal error: ") + e.what());
      error = e.what();
    }
    model_.record_infer("grpc", q->id(), images, grpc_code_name(status.error_code()), status.ok(),
                          std::chrono::duration<double>(Clock::now() - start).count(), error);
    return status;
  }

 private:
  grpc::Status counted(const char* endpoint, grpc::Status s) {
    model_.metrics().count_request("grpc", endpoint, grpc_code_name(s.error_code()));
    return s;
  }
  static grpc::Status not_found(const std::string& name) { return grpc::Status(grpc::StatusCode::NOT_FOUND, "no model '" + name + "'"); }

  ServedModel& model_;
  std::string version_;
  std::unique_ptr<grpc::Server> grpc_server_;
};

}  // namespace focuspatch::serve
