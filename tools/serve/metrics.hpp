#pragma once
// Prometheus text exposition (format 0.0.4) of what an operator watches: requests by protocol,
// endpoint and outcome, inference latency, batch sizes and pass time, queue depth, bank reloads.
// Counters only grow; the queue depth is read when /metrics is scraped.
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace focuspatch::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v) {
    std::size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += v;
    ++count_;
  }
  void render(std::ostringstream& out, const std::string& name, const std::string& labels) const {
    std::uint64_t cumulative = 0;
    const std::string sep = labels.empty() ? "" : ",";
    for (std::size_t i = 0; i < bounds_.size(); ++i) {
      cumulative += counts_[i];
      out << name << "_bucket{" << labels << sep << "le=\"" << bounds_[i] << "\"} " << cumulative << "\n";
    }
    out << name << "_bucket{" << labels << sep << "le=\"+Inf\"} " << count_ << "\n";
    const std::string braces = labels.empty() ? "" : "{" + labels + "}";
    out << name << "_sum" << braces << " " << sum_ << "\n" << name << "_count" << braces << " " << count_ << "\n";
  }

 private:
  std::vector<double> bounds_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

class Metrics {
 public:
  // One answered request: protocol "http" or "grpc", endpoint ("infer", "ready", ...), status
  // ("200", "400", "OK", "INVALID_ARGUMENT", ...).
  void count_request(const std::string& protocol, const std::string& endpoint, const std::string& status) {
    std::lock_guard lock(mutex_);
    ++requests_[{protocol, endpoint, status}];
  }
  void observe_infer(const std::string& protocol, double seconds, std::size_t images, bool ok) {
    std::lock_guard lock(mutex_);
    auto it = latency_.try_emplace(protocol, latency_bounds()).first;
    it->second.observe(seconds);
    if (ok) images_ += images;
    else ++infer_errors_[protocol];
  }
  void observe_batch(std::size_t items, double seconds) {
    std::lock_guard lock(mutex_);
    batch_size_.observe(static_cast<double>(items));
    batch_seconds_.observe(seconds);
  }
  void count_reload(bool ok) {
    std::lock_guard lock(mutex_);
    ++reloads_[ok ? 0 : 1];
  }

  std::string render(std::size_t queued_images, std::size_t queued_requests, bool ready) const {
    std::lock_guard lock(mutex_);
    std::ostringstream out;
    out << "# HELP focuspatch_requests_total Requests answered, by protocol, endpoint and status.\n"
           "# TYPE focuspatch_requests_total counter\n";
    for (const auto& [key, n] : requests_)
      out << "focuspatch_requests_total{protocol=\"" << std::get<0>(key) << "\",endpoint=\"" << std::get<1>(key) << "\",status=\""
          << std::get<2>(key) << "\"} " << n << "\n";
    out << "# HELP focuspatch_infer_errors_total Inference requests answered with an error.\n"
           "# TYPE focuspatch_infer_errors_total counter\n";
    for (const char* p : {"http", "grpc"}) {
      auto it = infer_errors_.find(p);
      out << "focuspatch_infer_errors_total{protocol=\"" << p << "\"} " << (it == infer_errors_.end() ? 0 : it->second) << "\n";
    }
    out << "# HELP focuspatch_images_total Images scored.\n# TYPE focuspatch_images_total counter\n"
        << "focuspatch_images_total " << images_ << "\n";
    out << "# HELP focuspatch_infer_duration_seconds Inference request latency, arrival to answer.\n"
           "# TYPE focuspatch_infer_duration_seconds histogram\n";
    for (const auto& [protocol, h] : latency_) h.render(out, "focuspatch_infer_duration_seconds", "protocol=\"" + protocol + "\"");
    out << "# HELP focuspatch_batch_size Images per forward pass.\n# TYPE focuspatch_batch_size histogram\n";
    batch_size_.render(out, "focuspatch_batch_size", "");
    out << "# HELP focuspatch_batch_duration_seconds Time of one forward pass.\n# TYPE focuspatch_batch_duration_seconds histogram\n";
    batch_seconds_.render(out, "focuspatch_batch_duration_seconds", "");
    out << "# HELP focuspatch_queue_images Images waiting for a forward pass.\n# TYPE focuspatch_queue_images gauge\n"
        << "focuspatch_queue_images " << queued_images << "\n";
    out << "# HELP focuspatch_queue_requests Requests waiting for a forward pass.\n# TYPE focuspatch_queue_requests gauge\n"
        << "focuspatch_queue_requests " << queued_requests << "\n";
    out << "# HELP focuspatch_bank_reloads_total Memory bank reloads, by result.\n# TYPE focuspatch_bank_reloads_total counter\n"
        << "focuspatch_bank_reloads_total{result=\"ok\"} " << reloads_[0] << "\n"
        << "focuspatch_bank_reloads_total{result=\"failed\"} " << reloads_[1] << "\n";
    out << "# HELP focuspatch_ready Whether the model is ready.\n# TYPE focuspatch_ready gauge\n"
        << "focuspatch_ready " << (ready ? 1 : 0) << "\n";
    return out.str();
  }

 private:
  static std::vector<double> latency_bounds() { return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}; }

  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, std::string>, std::uint64_t> requests_;
  std::map<std::string, std::uint64_t> infer_errors_;
  std::map<std::string, Histogram> latency_;
  std::uint64_t images_ = 0;
  Histogram batch_size_{{1, 2, 4, 8, 16, 32, 64, 128}};
  Histogram batch_seconds_{latency_bounds()};
  std::array<std::uint64_t, 2> reloads_{};
};

}  // namespace focuspatch::serve
