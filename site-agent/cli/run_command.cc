// `fedtune-site run`: the daemon, stopped cleanly by SIGINT or SIGTERM.
#include <atomic>
#include <memory>
#include <iostream>
#include <thread>

#include "common/core/logging.h"
#include "common/core/signals.h"
#include "site-agent/cli/commands.h"
#include "site-agent/config/site_config.h"
#include "site-agent/dicom_scp/store_scp.h"
#include "site-agent/ingest/workspace_index.h"
#include "site-agent/runner/site_daemon.h"
#include "site-agent/runner/site_http.h"
#include "site-agent/runner/site_inference.h"

namespace fedtune::site {

void SetupRun(CLI::App& app, RunCommand& cmd) {
  auto* sub = app.add_subcommand(
      "run", "Run the site agent: connect to the coordinator and train the federation's jobs on this site's data");
  sub->footer(
      "Example:\n  fedtune-site run --config /etc/fedtune/site.toml\n"
      "Needs [coordinator] address, [tls] ca/cert/key (certs/README.md) and [training] backbone in site.toml,\n"
      "and an ingested workspace (fedtune-site ingest). Only model updates and aggregate metrics (counts below\n"
      "[stats] k suppressed) leave this host. Stops cleanly on SIGINT/SIGTERM; reconnects by itself.\n"
      "With [scp] enabled = true it also receives radiographs from the PACS (see fedtune-site receive --help).\n"
      "With [http] listen = \"127.0.0.1:9465\" it serves /metrics for Prometheus (counts only; loopback, or HTTPS\n"
      "with the hospital's client certificates).\n"
      "With [inference] enabled = true it also serves the federation's promoted model to the hospital's clients\n"
      "(see fedtune-site serve --help).");
  sub->add_option("--config", cmd.config, "site.toml")->required()->envname("FEDTUNE_SITE_CONFIG")
      ->check(CLI::ExistingFile);
  sub->add_option("--inference-http-port-file", cmd.inference_http_port_file,
                  "With [inference] enabled: write the bound REST port here (with a port of 0)");
  sub->add_option("--inference-grpc-port-file", cmd.inference_grpc_port_file,
                  "With [inference] enabled: write the bound gRPC port here (with a port of 0)");
  sub->callback([&cmd] { throw CLI::RuntimeError(RunRun(cmd)); });
}

int RunRun(const RunCommand& cmd) {
  auto config = LoadSiteConfigAndStartLogging(cmd.config);
  if (!config.ok()) {
    std::cerr << "fedtune-site run: " << config.status().message() << "\n";
    return 2;
  }
  if (auto st = ingest::CheckWorkspaceIndex(config->ingest.workspace); !st.ok()) {
    spdlog::critical("{}", std::string(st.message()));
    return 1;
  }
  const TerminationSignals signals;  // before any other thread starts
  std::unique_ptr<scp::StoreScp> receiver;
  if (config->scp.enabled) {
    auto started = scp::StoreScp::Start(config->scp.options, ScpIngestOptions(*config));
    if (!started.ok()) {
      spdlog::critical("{}: {}", cmd.config, std::string(started.status().message()));
      return 1;
    }
    receiver = std::move(*started);
  }
  MetricsRegistry metrics;
  RegisterProcessMetrics(metrics, "site");
  AddSiteCollectors(*config, receiver.get(), &metrics);
  auto http = StartSiteHttp(*config, &metrics);
  if (!http.ok()) {
    spdlog::critical("{}: [http]: {}", cmd.config, std::string(http.status().message()));
    if (receiver != nullptr) receiver->Stop();
    return 1;
  }
  std::unique_ptr<InferenceService> inference;
  if (config->inference.enabled) {
    auto started = InferenceService::Start(InferenceOptionsFor(*config), &metrics);
    absl::Status st = started.ok() ? WriteServicePorts(**started, cmd.inference_http_port_file,
                                                       cmd.inference_grpc_port_file)
                                   : started.status();
    if (!st.ok()) {
      spdlog::critical("{}: [inference]: {}", cmd.config, std::string(st.message()));
      if (*http != nullptr) (*http)->Stop();
      if (receiver != nullptr) receiver->Stop();
      return 1;
    }
    inference = std::move(*started);
    spdlog::info("inference: REST on port {}, gRPC on port {} ({})", inference->http_port(), inference->grpc_port(),
                 config->inference.tls ? "mutual TLS" : "plain, loopback only");
  }
  // The daemon says when the workspace's promoted model changed.
  auto on_serving = [&](const std::string& backbone_sha256) {
    if (inference == nullptr) return;
    auto served = ServeHeldModel(*config, backbone_sha256, inference.get());
    if (!served.ok()) {
      spdlog::error("inference: cannot load the promoted model: {}", std::string(served.status().message()));
    }
  };
  std::atomic<bool> stop{false};
  std::thread waiter([&] {
    const int sig = signals.Wait();
    if (!stop) spdlog::info("signal {}: stopping", sig);
    stop = true;
  });
  const int code = RunSiteDaemon(
      *config, &stop,
      [&receiver]() -> int64_t { return receiver != nullptr ? receiver->Counters().ingested : 0; }, &metrics,
      on_serving);
  if (!stop) {
    // The daemon ended by itself (configuration problem): release the waiter.
    stop = true;
    pthread_kill(waiter.native_handle(), SIGTERM);
  }
  waiter.join();
  if (inference != nullptr) inference->Stop();
  if (*http != nullptr) (*http)->Stop();
  if (receiver != nullptr) receiver->Stop();
  return code;
}

}  // namespace fedtune::site
