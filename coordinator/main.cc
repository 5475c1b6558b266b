// fedtune-coordinator: the federation's server. Sites and operators reach it
// over mutual TLS; all state lives in the state directory (SQLite + model
// files), so it can be stopped or killed at any time and started again.
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <iostream>
#include <thread>

#include "common/core/file_io.h"
#include "common/core/signals.h"
#include "common/fl/task_spec.h"
#include "common/model/classifier.h"
#include "coordinator/service/coordinator_config.h"

namespace fedtune::coordinator {
namespace {

// Version 0 of a job: the global state of a freshly built model, seeded by
// the job so it is reproducible: LoRA A random, B zero, head random, and
// zero differences from the base weights for the backbone tensors a method
// trains (each site adds them to the base file the job names).
absl::StatusOr<TensorMap> InitialWeights(const JobSpec& job) {
  auto spec = fl::ModelSpecFor(job.backbone_architecture, job.train);
  if (!spec.ok()) return spec.status();
  model::ClassifierOptions o;
  o.device = "cpu";
  o.threads = 1;
  o.seed = static_cast<uint64_t>(job.train.seed());
  auto model = model::Classifier::Create(*spec, o);
  if (!model.ok()) return model.status();
  return (*model)->GlobalState();
}

int Serve(const std::string& config_path, const std::string& port_file) {
  auto config = LoadCoordinatorConfig(config_path);
  if (!config.ok()) {
    std::cerr << "fedtune-coordinator: " << config.status().message() << "\n";
    return 2;
  }
  if (auto st = InitLogging(config->log); !st.ok()) {
    std::cerr << "fedtune-coordinator: " << st.message() << "\n";
    return 2;
  }
  const TerminationSignals signals;  // before any other thread starts

  net::TlsFiles tls = config->tls;
  if (!config->crl_pem.empty()) {
    tls.crl_dir = config->state_dir + "/crl.d";
    if (auto st = net::PrepareCrlDirectory(tls.ca_pem, config->crl_pem, tls.crl_dir); !st.ok()) {
      spdlog::critical("CRL: {}", std::string(st.message()));
      return 1;
    }
  }
  auto creds = net::MakeServerCredentials(tls);
  if (!creds.ok()) {
    spdlog::critical("TLS: {}", std::string(creds.status().message()));
    return 1;
  }
  SystemClock clock;
  EngineOptions eo;
  eo.state_dir = config->state_dir;
  eo.site_timeout_ms = config->site_timeout_ms;
  eo.max_update_bytes = config->service.max_update_bytes;
  eo.initial_weights = InitialWeights;
  auto engine = RoundEngine::Open(eo, &clock);
  if (!engine.ok()) {
    spdlog::critical("state: {}", std::string(engine.status().message()));
    return 1;
  }
  if (auto st = (*engine)->SetEnrolledSites(config->enrolled_sites); !st.ok()) {
    spdlog::critical("enrolment: {}", std::string(st.message()));
    return 1;
  }
  FederationService federation(engine->get(), config->service);
  AdminService admin(engine->get(), config->service);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config->listen, *creds, &port);
  builder.RegisterService(&federation);
  builder.RegisterService(&admin);
  builder.SetMaxReceiveMessageSize(8 << 20);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    spdlog::critical("cannot listen on {} (address in use, or not an address of this host?)", config->listen);
    return 1;
  }
  if (!port_file.empty()) {
    if (auto st = WriteFileAtomically(port_file, std::to_string(port) + "\n"); !st.ok()) {
      spdlog::critical("{}", std::string(st.message()));
      return 1;
    }
  }
  spdlog::info("listening on {} (port {}), {} enrolled sites, state in {}", config->listen, port,
               config->enrolled_sites.size(), config->state_dir);

  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    uint64_t seen = 0;
    while (!stop) {
      if (auto st = (*engine)->Tick(); !st.ok()) spdlog::error("tick: {}", std::string(st.message()));
      seen = (*engine)->WaitForChange(seen, 250);
    }
  });
  spdlog::info("signal {}: shutting down", signals.Wait());
  stop = true;
  (*engine)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ticker.join();
  return 0;
}

}  // namespace
}  // namespace fedtune::coordinator

int main(int argc, char** argv) {
  CLI::App app{"fedtune-coordinator: the federation server. Site agents dial in over mutual TLS, train the jobs "
               "operators submit with `fedtune`, and only model updates and aggregate metrics come back."};
  app.require_subcommand(1);
  std::string config, port_file;
  CLI::App* serve = app.add_subcommand("serve", "Run the coordinator until SIGINT/SIGTERM");
  serve->add_option("--config", config, "coordinator.toml (see deploy/examples/coordinator.toml)")
      ->required()
      ->check(CLI::ExistingFile);
  serve->add_option("--port-file", port_file,
                    "write the bound port here once listening (useful with listen = \"127.0.0.1:0\")");
  serve->footer("Example:\n  fedtune-coordinator serve --config /etc/fedtune/coordinator.toml");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return fedtune::coordinator::Serve(config, port_file);
}
