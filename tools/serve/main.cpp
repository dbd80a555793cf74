// focuspatch-serve: the detector as a model server speaking the Open Inference Protocol (KServe
// v2) over HTTP/REST and gRPC, with dynamic batching, Prometheus metrics, memory bank reload and
// graceful shutdown. See tools/serve/*.hpp for the parts and README.md for the protocol details.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <iostream>
#include <limits>
#include <string>
#include <thread>

#include "common/cli_args.hpp"
#include "common/detector_setup.hpp"
#include "common/device_option.hpp"
#include "common/image_options.hpp"
#include "serve/grpc_front.hpp"
#include "serve/http_front.hpp"
#include "serve/model_service.hpp"

#ifndef FOCUSPATCH_SERVE_VERSION
#define FOCUSPATCH_SERVE_VERSION "unknown"
#endif

namespace {

constexpr const char* kUsage = R"(usage: focuspatch-serve --weights FILE.fpw --memory BANK.fpw [options]

Serves the detector with the memory bank BANK.fpw (made by focuspatch-detect --memory) over the
Open Inference Protocol (KServe v2): HTTP/REST and gRPC, as KServe, Triton and MLServer clients
speak it. Input 'image' BYTES [N]: encoded image files (base64 strings in JSON 'data', raw with
the binary-data extension or gRPC). Outputs score, normalized_score, anomalous, verdict,
category, top_keyword, regions (JSON text), and on request (parameter anomaly_map / mask) the
anomaly_map and binary mask; the decisions use the calibration stored in BANK.fpw (a category
without one answers verdict "uncalibrated", see the model metadata). SIGHUP (or the repository
load call) re-reads BANK.fpw; SIGTERM stops after answering the requests in flight.

options:
  --weights FILE        a .fpw file made by focuspatch-convert (the one the bank was built with)
  --memory BANK         the memory bank file
  --model-name NAME     the model's name in the protocol's paths (default focuspatch)
  --host ADDR           address to listen on (default 127.0.0.1: this machine only)
  --http-port N         HTTP/REST port (default 8000; 0: any free port, printed at start)
  --grpc-port N         gRPC port (default 8001; 0: any free port)
  --max-batch N         images per forward pass (default 8; 1 turns batching off)
  --max-delay-ms D      how long a request waits for others to share its pass (default 2)
  --max-queue Q         images waiting at most; more are refused as overloaded (default 256)
  --max-body-bytes B    largest request body / gRPC message (default 67108864)
  --max-image-pixels P  refuse larger images before decoding them (default 100000000)
  --http-threads N      HTTP connections served at once (default 32)
  --grpc-threads N      gRPC calls served at once (default 64)
  --read-timeout-s S    drop an HTTP client silent for S seconds (default 5)
  --quiet               no log line per inference request
  --prompts FILE, --text-weight W, --no-value-value, --suppress-background
                        as for focuspatch-detect; give the same ones for the same scores
  --device D            cpu (default) or cuda[:N]
  --precision P         matrix products: on the CPU f32 (default) or bf16 (AVX512-BF16/AMX,
                        else f32); on a GPU f16 or bf16
  -h, --help            this text
)";

int run(int argc, char** argv) {
  using namespace focuspatch;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "-h" || std::string(argv[i]) == "--help") return std::cout << kUsage, 0;
  // Signals go to one thread that waits for them (below), never to a thread inside a request:
  // block them before any thread starts, so every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a vanished client is an error on its socket, not the end of the server

  const cli::Args args(argc, argv,
                       {"weights", "memory", "model-name", "host", "http-port", "grpc-port", "max-batch", "max-delay-ms", "max-queue",
                        "max-body-bytes", "http-threads", "grpc-threads", "read-timeout-s", "prompts", "text-weight", cli::kMaxImagePixelsOption,
                        cli::kDeviceOption, cli::kPrecisionOption},
                       {"no-value-value", "suppress-background", "quiet"});
  require(args.positional().empty(), "unexpected argument '", args.positional().empty() ? "" : args.positional()[0], "' (see --help)");
  const auto memory = args.get("memory");
  require(memory.has_value(), "no --memory BANK.fpw given: build one with focuspatch-detect --memory (see --help)");

  serve::ServiceOptions service_options;
  service_options.model_name = args.get_or("model-name", "focuspatch");
  require(!service_options.model_name.empty() && service_options.model_name.find_first_of("/?#% ") == std::string::npos,
          "option --model-name: '", service_options.model_name, "' must be non-empty without / ? # % or spaces");
  service_options.memory_path = *memory;
  service_options.batch.max_batch = static_cast<std::size_t>(args.get_int("max-batch", 1, 1024).value_or(8));
  service_options.batch.max_delay = std::chrono::microseconds(args.get_int("max-delay-ms", 0, 60000).value_or(2) * 1000);
  service_options.batch.max_queue = static_cast<std::size_t>(args.get_int("max-queue", 1, 1 << 20).value_or(256));
  service_options.image_limits = cli::image_load_options(args);
  service_options.log_requests = !args.has("quiet");
  serve::HttpOptions http_options;
  http_options.host = args.get_or("host", "127.0.0.1");
  http_options.port = static_cast<int>(args.get_int("http-port", 0, 65535).value_or(8000));
  http_options.max_body_bytes = static_cast<std::size_t>(args.get_int("max-body-bytes", 1024, std::numeric_limits<int>::max()).value_or(64 << 20));
  http_options.threads = static_cast<std::size_t>(args.get_int("http-threads", 1, 1024).value_or(32));
  http_options.read_timeout_s = static_cast<int>(args.get_int("read-timeout-s", 1, 3600).value_or(5));
  const int grpc_port = static_cast<int>(args.get_int("grpc-port", 0, 65535).value_or(8001));
  const int grpc_threads = static_cast<int>(args.get_int("grpc-threads", 2, 4096).value_or(64));

  return cli::with_device(args, args.get_or("weights", ""), [&](auto backend) {
    using Backend = decltype(backend);
    tools::DetectorSetup<Backend> setup(args, std::move(backend));
    using Service = serve::ModelService<Backend>;
    Service service(setup.model(), setup.detector().options(),
                    [&](Detector<Backend>& d) { tools::DetectorSetup<Backend>::set_prompt_bank_from(args, d); }, service_options);
    serve::HttpFront<Service> http(service, http_options, FOCUSPATCH_SERVE_VERSION);
    const int http_port = http.bind();
    serve::GrpcFront<Service> grpc(service, FOCUSPATCH_SERVE_VERSION);
    const int bound_grpc = grpc.start(http_options.host, grpc_port, http_options.max_body_bytes, grpc_threads);
    std::thread http_thread([&] { http.serve(); });
    http.wait_until_serving();
    std::cerr << "focuspatch-serve: model '" << service_options.model_name << "' (" << service.categories() << " categories, "
              << cli::device_description(setup.model().backend()) << ") ready on http " << http_options.host << ":" << http_port
              << " grpc " << http_options.host << ":" << bound_grpc << std::endl;

    while (true) {
      int sig = 0;
      if (sigwait(&signals, &sig) != 0) continue;
      if (sig != SIGHUP) break;
      try {
        service.reload();
        std::cerr << "focuspatch-serve: reloaded " << *memory << " (" << service.categories() << " categories)" << std::endl;
      } catch (const std::exception& e) {
        std::cerr << "focuspatch-serve: reload failed, the previous memory bank keeps serving: " << e.what() << std::endl;
      }
    }
    std::cerr << "focuspatch-serve: stopping; answering the requests in flight" << std::endl;
    service.set_ready(false);
    std::thread grpc_stop([&] { grpc.stop(std::chrono::seconds(30)); });
    http.stop();
    http_thread.join();
    grpc_stop.join();
    grpc.wait();
    service.drain();
    std::cerr << "focuspatch-serve: stopped" << std::endl;
    return 0;
  });
}

}  // namespace

int main(int argc, char** argv) { return focuspatch::cli::guarded_main("focuspatch-serve", argc, argv, run); }
