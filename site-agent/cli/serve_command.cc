// `fedtune-site serve`: the inference service alone, on the promoted model
// the workspace holds (fetched by `fedtune-site run`), reloaded when the
// daemon takes a new one. Stopped cleanly by SIGINT or SIGTERM.
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

#include "common/core/hashing.h"
#include "common/core/logging.h"
#include "common/core/signals.h"
#include "site-agent/cli/commands.h"
#include "site-agent/config/site_config.h"
#include "site-agent/runner/site_inference.h"

namespace fedtune::site {

void SetupServe(CLI::App& app, ServeCommand& cmd) {
  auto* sub = app.add_subcommand(
      "serve", "Serve the federation's promoted model to this hospital's clients (Open Inference Protocol v2 over "
               "REST and gRPC, and DICOM in, findings out)");
  sub->footer(
      "Example:\n  fedtune-site serve --config /etc/fedtune/site.toml\n"
      "  curl -s localhost:8000/v2/health/ready\n"
      "  curl -s -H 'Content-Type: application/dicom' --data-binary @image.dcm localhost:8000/v1/predict\n"
      "Serves the model the workspace holds (models/current: the last one `fedtune model promote` sent to this\n"
      "site's daemon) and picks up a newer one within seconds. [inference] in site.toml sets the addresses\n"
      "(REST 127.0.0.1:8000, gRPC 127.0.0.1:8001 by default; plain on loopback only, otherwise tls = true with\n"
      "a server certificate and the hospital's client CA), batching and the device. Images are decoded in memory\n"
      "as ingest decodes them and never stored; nothing of a request is logged. `fedtune-site run` serves the\n"
      "same when [inference] enabled = true.");
  sub->add_option("--config", cmd.config, "site.toml")->required()->envname("FEDTUNE_SITE_CONFIG")
      ->check(CLI::ExistingFile);
  sub->add_option("--http-port-file", cmd.http_port_file, "Write the bound REST port here (with a port of 0)");
  sub->add_option("--grpc-port-file", cmd.grpc_port_file, "Write the bound gRPC port here (with a port of 0)");
  sub->callback([&cmd] { throw CLI::RuntimeError(RunServe(cmd)); });
}

int RunServe(const ServeCommand& cmd) {
  auto config = LoadSiteConfigAndStartLogging(cmd.config);
  if (!config.ok()) {
    std::cerr << "fedtune-site serve: " << config.status().message() << "\n";
    return 2;
  }
  std::string backbone_sha;
  if (!config->run.backbone.empty()) {
    auto sha = Sha256FileHex(config->run.backbone);
    if (!sha.ok()) {
      spdlog::critical("{}: [training] backbone: {}", cmd.config, std::string(sha.status().message()));
      return 1;
    }
    backbone_sha = *sha;
  }
  const TerminationSignals signals;  // before any other thread starts
  MetricsRegistry metrics;
  auto service = InferenceService::Start(InferenceOptionsFor(*config), &metrics);
  if (!service.ok()) {
    spdlog::critical("{}: [inference]: {}", cmd.config, std::string(service.status().message()));
    return 1;
  }
  if (auto st = WriteServicePorts(**service, cmd.http_port_file, cmd.grpc_port_file); !st.ok()) {
    spdlog::critical("{}", std::string(st.message()));
    return 1;
  }
  spdlog::info("inference: REST on port {}, gRPC on port {} ({})", (*service)->http_port(), (*service)->grpc_port(),
               config->inference.tls ? "mutual TLS" : "plain, loopback only");
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread waiter([&] {
    const int sig = signals.Wait();
    spdlog::info("signal {}: stopping", sig);
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
    cv.notify_all();
  });
  std::string last_error;  // a model that cannot be loaded is reported once, not every 2 s
  bool said_none = false;
  std::unique_lock<std::mutex> lock(mu);
  while (!stop) {
    lock.unlock();
    auto served = ServeHeldModel(*config, backbone_sha, service->get());
    if (!served.ok()) {
      const std::string why(served.status().message());
      if (why != last_error) spdlog::error("inference: cannot load the workspace's promoted model: {}", why);
      last_error = why;
    } else if (*served == nullptr && !said_none) {
      spdlog::info("inference: no promoted model in {}/models yet; ready once the site daemon fetches one",
                   config->ingest.workspace);
      said_none = true;
    }
    lock.lock();
    cv.wait_for(lock, std::chrono::seconds(2), [&] { return stop; });
  }
  lock.unlock();
  waiter.join();
  (*service)->Stop();
  return 0;
}

}  // namespace fedtune::site
