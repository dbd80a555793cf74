#pragma once
// The served model behind both fronts: the loaded CLIP model, the detector with the current memory
// bank, the batching queue, and what every request does whatever protocol carried it (check the
// model name, decode the images, queue them, map the detections to output tensors).
//
// Reloading the bank builds a complete new detector beside the serving one and swaps a pointer
// between two forward passes: requests queued meanwhile wait as usual and are served by the old
// bank until the swap, then by the new one; a bank that fails to load leaves the old one serving.
// The file is read while passes run; the new detector's preparation (keyword embeddings from the
// text tower, on a GPU the bank's upload) runs between two passes, because a backend need not
// allow two model calls at once on one device.
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "focuspatch/anomaly/detector.hpp"
#include "serve/batch_queue.hpp"
#include "serve/metrics.hpp"
#include "serve/model_signature.hpp"

namespace focuspatch::serve {

struct ServiceOptions {
  std::string model_name = "focuspatch";
  std::string memory_path;  // the bank file, re-read on reload
  BatchOptions batch;
  ImageLoadOptions image_limits;
  bool log_requests = true;
};

// Request parameter: the request's deadline in microseconds from its arrival (Triton's "timeout").
inline constexpr const char* kTimeoutParameter = "timeout";

template <class Backend>
class ModelService {
 public:
  using DetectorType = Detector<Backend>;
  // configure: gives a fresh detector what the command line chose besides its options (the
  // prompt bank), so a reloaded detector scores exactly like the first.
  ModelService(ClipModel<Backend>& model, DetectorOptions detector_options, std::function<void(DetectorType&)> configure,
               ServiceOptions options)
      : model_(model),
        detector_options_([&] {
          detector_options.batch_size = static_cast<int>(options.batch.max_batch);  // one queue batch, one forward pass
          return detector_options;
        }()),
        configure_(std::move(configure)),
        options_(std::move(options)),
        metadata_(model_metadata(options_.model_name)) {
    reload();  // throws when the bank is unusable: the server does not start without a model
    queue_ = std::make_unique<BatchQueue<Image, Detection>>(
        options_.batch,
        [this](std::vector<Image>& images) {
          std::lock_guard pass(forward_mutex_);
          return current()->detect(std::span<const Image>(images), workspace_);
        },
        [this](std::size_t n, double s) { metrics_.observe_batch(n, s); });
    ready_ = true;
  }

  // Builds a detector with the bank now in the file and swaps it in; throws (the old one keeps
  // serving) when the file is missing, corrupt, or made with other weights.
  void reload() {
    std::lock_guard lock(reload_mutex_);
    try {
      auto detector = std::make_shared<DetectorType>(model_, detector_options_);
      configure_(*detector);
      detector->set_memory(MemoryBank::load(options_.memory_path, DetectorType::weights_id(model_)));
      require(!detector->memory().empty(), options_.memory_path, ": the memory bank holds no category");
      {
        std::lock_guard pass(forward_mutex_);
        detector->prepare();
      }
      categories_ = detector->memory().categories().size();
      std::lock_guard swap(current_mutex_);
      current_ = std::move(detector);
    } catch (...) {
      metrics_.count_reload(false);
      throw;
    }
    metrics_.count_reload(true);
  }
  std::size_t categories() const { return categories_; }

  bool ready() const { return ready_; }
  void set_ready(bool r) { ready_ = r; }
  const ModelMetadata& metadata() const { return metadata_; }
  const ServiceOptions& options() const { return options_; }
  Metrics& metrics() { return metrics_; }
  std::string render_metrics() const { return metrics_.render(queue_->queued_items(), queue_->queued_requests(), ready_); }

  // Whether NAME (and VERSION, empty: any) is the served model.
  bool serves(const std::string& name, const std::string& version) const {
    return name == options_.model_name && (version.empty() || version == metadata_.version);
  }

  // Answers one request; transport_deadline: the client's own (gRPC), if any. Throws ProtocolError.
  InferResponse infer(const InferRequest& request, Clock::time_point transport_deadline = Clock::time_point::max()) {
    const auto arrival = Clock::now();
    if (!serves(request.model_name, request.model_version))
      refuse(Failure::NotFound, "no model '", request.model_name, "'", request.model_version.empty() ? "" : " version " + request.model_version,
             " (this server has '", options_.model_name, "' version 1)");
    if (!ready_) refuse(Failure::Unavailable, "the model is not ready");
    Clock::time_point deadline = transport_deadline;
    if (const auto us = int_parameter(request.parameters, kTimeoutParameter)) {
      if (*us <= 0) refuse(Failure::BadRequest, "parameter 'timeout' must be a positive number of microseconds");
      deadline = std::min(deadline, arrival + std::chrono::microseconds(std::min<std::int64_t>(*us, std::int64_t{86400} * 1000000)));
    }
    const std::set<std::string> wanted = selected_outputs(request);
    std::vector<Image> images = request_images(request, options_.image_limits);
    check_outputs_possible(images, wanted);
    const ImageSize size{images.front().height, images.front().width};
    auto future = queue_->submit(std::move(images), deadline);
    if (deadline != Clock::time_point::max() && future.wait_until(deadline) != std::future_status::ready)
      refuse(Failure::Timeout, "the request's deadline passed before its images were scored");
    const std::vector<Detection> detections = future.get();
    InferResponse response;
    response.id = request.id;
    response.model_name = options_.model_name;
    response.model_version = metadata_.version;
    response.outputs = detection_outputs(detections, size, wanted);
    return response;
  }

  // Metrics and the one log line of an answered inference request.
  void record_infer(const char* protocol, const std::string& id, std::size_t images, const std::string& status, bool ok, double seconds,
                    const std::string& error) {
    metrics_.count_request(protocol, "infer", status);
    metrics_.observe_infer(protocol, seconds, images, ok);
    if (!options_.log_requests) return;
    char line[160];
    std::snprintf(line, sizeof line, "%s infer %s images=%zu %.1fms", protocol, status.c_str(), images, seconds * 1000);
    std::string text = line + (id.empty() ? "" : " id=" + id.substr(0, 64)) + (error.empty() ? "" : ": " + error.substr(0, 300));
    // Ids and messages quote what clients sent: a newline in them must not forge a second line.
    for (char& c : text)
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    std::lock_guard lock(log_mutex_);
    std::cerr << text << "\n";
  }

  // Stops taking requests into the queue and finishes the queued ones (after the fronts stopped).
  void drain() { queue_->close(); }

 private:
  std::shared_ptr<const DetectorType> current() const {
    std::lock_guard lock(current_mutex_);
    return current_;
  }

  ClipModel<Backend>& model_;
  DetectorOptions detector_options_;
  std::function<void(DetectorType&)> configure_;
  ServiceOptions options_;
  ModelMetadata metadata_;
  Metrics metrics_;
  std::mutex reload_mutex_, log_mutex_;
  std::mutex forward_mutex_;  // one model call at a time: a forward pass or a reload's preparation
  mutable std::mutex current_mutex_;
  std::shared_ptr<const DetectorType> current_;
  std::atomic<std::size_t> categories_{0};
  std::atomic<bool> ready_{false};
  typename DetectorType::Workspace workspace_;  // the batch worker's; only it runs forward passes
  std::unique_ptr<BatchQueue<Image, Detection>> queue_;  // last: its worker uses the members above
};

}  // namespace focuspatch::serve
