#pragma once
// The protocol over HTTP/REST (KServe v2 paths) with cpp-httplib, plus /metrics for Prometheus
// and Triton's repository load call for reloading the memory bank.
//
// Hostile or broken clients: bodies over --max-body-bytes are refused (413) while being read;
// compressed bodies are refused (415) before they are inflated, so a small gzip bomb cannot grow
// past the body limit; a client that stalls longer than the read timeout is disconnected; a
// client that vanishes costs its connection's thread only until the write fails. Connections are
// served by a fixed pool of threads, each blocked on one request at a time.
#include <httplib.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <charconv>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "serve/model_service.hpp"
#include "serve/rest_codec.hpp"

namespace focuspatch::serve {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::size_t max_body_bytes = 64u << 20;
  std::size_t threads = 32;
  int read_timeout_s = 5;
};

template <class Service>
class HttpFront {
 public:
  HttpFront(Service& service, HttpOptions options, std::string server_version) : service_(service), options_(std::move(options)) {
    const std::size_t threads = options_.threads;
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_payload_max_length(options_.max_body_bytes);
    server_.set_socket_options([](int sock) {
      int yes = 1;
      // SO_REUSEADDR, not cpp-httplib's default SO_REUSEPORT: a second server started on a port
      // in use must fail, not silently share the port. TCP_NODELAY (inherited by accepted
      // sockets): the header and body of a response are separate writes, and Nagle's algorithm
      // would hold the body until the client's delayed ACK, 40 ms per request.
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    });
    server_.set_read_timeout(options_.read_timeout_s, 0);
    server_.set_write_timeout(options_.read_timeout_s, 0);
    server_.set_keep_alive_timeout(options_.read_timeout_s);
    server_.set_pre_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      const std::string encoding = req.get_header_value("Content-Encoding");
      if (!encoding.empty() && encoding != "identity") {
        res.status = 415;
        res.set_content(error_body("compressed request bodies (Content-Encoding: " + encoding.substr(0, 40) + ") are not accepted"),
                        "application/json");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    server_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      // cpp-httplib caps form-encoded bodies (curl -d's default type) at 8 KiB whatever the limit.
      const bool form = req.get_header_value("Content-Type") == "application/x-www-form-urlencoded";
      const std::string reason = res.status == 413 && form ? "form-encoded bodies are limited to 8 KiB; send Content-Type: application/json"
                                 : res.status == 413 ? "the request body is larger than the server's limit (--max-body-bytes)"
                                 : res.status == 404 ? "no such endpoint"
                                 : res.status == 405 ? "method not allowed"
                                                     : "bad request";
      res.set_content(error_body(reason), "application/json");
    });
    server_.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
      res.status = 500;
      res.set_content(error_body("internal error"), "application/json");
    });

    auto json_reply = [](httplib::Response& res, int status, const std::string& body) {
      res.status = status;
      res.set_content(body, "application/json");
    };
    server_.Get("/v2/health/live", [this, json_reply](const httplib::Request&, httplib::Response& res) {
      json_reply(res, 200, R"({"live":true})");
      count(res, "live");
    });
    server_.Get("/v2/health/ready", [this, json_reply](const httplib::Request&, httplib::Response& res) {
      const bool ready = service_.ready();
      json_reply(res, ready ? 200 : 503, ready ? R"({"ready":true})" : R"({"ready":false})");
      count(res, "ready");
    });
    server_.Get("/v2", [this, json_reply, server_version](const httplib::Request&, httplib::Response& res) {
      json::Writer w;
      w.begin_object().member("name", "focuspatch-serve").member("version", server_version).key("extensions").begin_array();
      for (const char* e : {"binary_tensor_data", "model_repository"}) w.value(e);
      w.end_array().end_object();
      json_reply(res, 200, w.str());
      count(res, "server_metadata");
    });
    const std::string model = R"(/v2/models/([^/]+)(?:/versions/([^/]+))?)";
    server_.Get(model, [this, json_reply](const httplib::Request& req, httplib::Response& res) {
      if (service_.serves(req.matches[1], req.matches[2])) json_reply(res, 200, metadata_body(service_.metadata(), kModelDescription));
      else json_reply(res, 404, error_body("no model '" + std::string(req.matches[1]) + "'"));
      count(res, "model_metadata");
    });
    server_.Get(model + "/ready", [this, json_reply](const httplib::Request& req, httplib::Response& res) {
      if (!service_.serves(req.matches[1], req.matches[2])) json_reply(res, 404, error_body("no model '" + std::string(req.matches[1]) + "'"));
      else json_reply(res, service_.ready() ? 200 : 503, service_.ready() ? R"({"ready":true})" : R"({"ready":false})");
      count(res, "model_ready");
    });
    server_.Post(model + "/infer", [this](const httplib::Request& req, httplib::Response& res) { infer(req, res); });
    server_.Post(R"(/v2/repository/models/([^/]+)/load)", [this, json_reply](const httplib::Request& req, httplib::Response& res) {
      if (!service_.serves(req.matches[1], "")) {
        json_reply(res, 404, error_body("no model '" + std::string(req.matches[1]) + "'"));
      } else {
        try {
          service_.reload();
          json_reply(res, 200, "{}");
        } catch (const std::exception& e) {
          json_reply(res, 400, error_body(std::string("reload failed, the previous memory bank keeps serving: ") + e.what()));
        }
      }
      count(res, "repository_load");
    });
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(service_.render_metrics(), "text/plain; version=0.0.4");
    });
  }

  // Binds the port (0: any free one); returns the port bound, or throws.
  int bind() {
    port_ = options_.port == 0 ? server_.bind_to_any_port(options_.host) : (server_.bind_to_port(options_.host, options_.port) ? options_.port : -1);
    require(port_ > 0, "cannot listen on http://", options_.host, ":", options_.port, " (in use, or not an address of this machine)");
    return port_;
  }
  // Serves until stop(); returns once every connection's request has been answered.
  void serve() { server_.listen_after_bind(); }
  void stop() { server_.stop(); }
  // Until serve() listens: a stop() before that would be lost.
  void wait_until_serving() const {
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

 private:
  void count(const httplib::Response& res, const char* endpoint) {
    service_.metrics().count_request("http", endpoint, std::to_string(res.status));
  }

  void infer(const httplib::Request& req, httplib::Response& res) {
    const auto start = Clock::now();
    InferRequest request;
    std::size_t images = 0;
    std::string error;
    try {
      std::optional<std::size_t> header_length;
      if (req.has_header(kBinaryHeader)) {
        const std::string v = req.get_header_value(kBinaryHeader);
        std::size_t n = 0;
        const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
        if (ec != std::errc() || end != v.data() + v.size()) refuse(Failure::BadRequest, kBinaryHeader, " '", v.substr(0, 40), "' is not a byte count");
        header_length = n;
      }
      request = parse_rest_request(req.body, header_length);
      request.model_name = req.matches[1];
      request.model_version = req.matches[2];
      for (const auto& t : request.inputs) images += std::visit([](const auto& v) { return v.size(); }, t.data);
      const InferResponse response = service_.infer(request);
      RestBody body = write_rest_response(response, request);
      res.status = 200;
      if (body.header_length) {
        res.set_header(kBinaryHeader, std::to_string(*body.header_length));
        res.set_content(body.body, "application/octet-stream");
      } else {
        res.set_content(body.body, "application/json");
      }
    } catch (const ProtocolError& e) {
      res.status = http_status(e.failure());
      res.set_content(error_body(e.what()), "application/json");
      error = e.what();
    } catch (const std::exception& e) {
      res.status = 500;
      res.set_content(error_body(std::string("internal error: ") + e.what()), "application/json");
      error = e.what();
    }
    service_.record_infer("http", request.id, images, std::to_string(res.status), res.status == 200,
                          std::chrono::duration<double>(Clock::now() - start).count(), error);
  }

  Service& service_;
  HttpOptions options_;
  httplib::Server server_;
  int port_ = -1;
};

}  // namespace focuspatch::serve
