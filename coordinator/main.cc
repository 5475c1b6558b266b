// fedtune-coordinator: the federation's server. Sites and operators reach it
// over mutual TLS; all state lives in the state directory (SQLite + model
// files), so it can be stopped or killed at any time and started again.
#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/core/file_io.h"
#include "common/net/pki.h"
#include "common/core/signals.h"
#include "coordinator/engine/initial_weights.h"
#include "coordinator/service/coordinator_config.h"
#include "coordinator/service/http_endpoint.h"

namespace fedtune::coordinator {
namespace {

int64_t NowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Reloads the CRL when its file changes and warns, once a day, when it is
// about to expire (every handshake fails after its nextUpdate).
void WatchCrl(net::RevocationList* crl, const net::TlsFiles& tls, const std::atomic<bool>* stop) {
  constexpr int64_t kWarnDays = 7;
  int64_t last_warning = 0;
  while (!*stop) {
    for (int i = 0; i < 50 && !*stop; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const int64_t now = NowUnix();
    auto changed = crl->ReloadIfChanged(now);
    if (!changed.ok()) {
      spdlog::error("CRL: the changed file was NOT taken into use, the previous CRL stays in force: {}",
                    std::string(changed.status().message()));
    } else if (*changed) {
      if (auto st = net::WriteCrlDirectory(tls.ca_pem, crl->pem(), tls.crl_dir); !st.ok()) {
        spdlog::error("CRL: {}", std::string(st.message()));
      }
      spdlog::info("CRL reloaded; valid until {} (unix time)", crl->next_update_unix());
    }
    const int64_t left = crl->next_update_unix() - now;
    if (left < kWarnDays * 86400 && now - last_warning > 86400) {
      spdlog::warn("CRL expires in {:.1f} days: issue a fresh one with `fedtune-certs crl PKI` (schedule it with cron) "
                   "and copy it over the configured file; after it expires every site is locked out",
                   static_cast<double>(left) / 86400);
      last_warning = now;
    }
  }
}

int Serve(const std::string& config_path, const std::string& port_file, const std::string& http_port_file) {
  ::umask(077);  // state, logs and model files: the service account's alone
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

  // One coordinator per state directory: a second one would answer half the
  // calls from a database the first one is changing.
  std::error_code ec;
  std::filesystem::create_directories(config->state_dir, ec);
  auto lock = ExclusiveLock::Acquire(config->state_dir + "/coordinator.lock",
                                     absl::StrCat("fedtune-coordinator pid ", ::getpid(), ", listening on ",
                                                  config->listen));
  if (!lock.ok()) {
    spdlog::critical("another coordinator is running on this state directory: {}; stop it first",
                     std::string(lock.status().message()));
    return 1;
  }

  net::TlsFiles tls = config->tls;
  auto revocations = net::RevocationList::Open(tls.ca_pem, config->crl_pem, NowUnix());
  if (!revocations.ok()) {
    spdlog::critical("CRL: {}", std::string(revocations.status().message()));
    return 1;
  }
  if ((*revocations)->enabled()) {
    tls.crl_dir = config->state_dir + "/crl.d";
    if (auto st = net::WriteCrlDirectory(tls.ca_pem, (*revocations)->pem(), tls.crl_dir); !st.ok()) {
      spdlog::critical("CRL: {}", std::string(st.message()));
      return 1;
    }
  } else {
    spdlog::warn("tls.crl = \"none\": revoked certificates are NOT refused");
  }
  auto creds = net::MakeServerCredentials(tls);
  if (!creds.ok()) {
    spdlog::critical("TLS: {}", std::string(creds.status().message()));
    return 1;
  }
  SystemClock clock;
  MetricsRegistry metrics;
  RegisterProcessMetrics(metrics, "coordinator");
  EngineOptions eo;
  eo.metrics = &metrics;
  eo.state_dir = config->state_dir;
  if (auto ca = ReadFileBytes(config->tls.ca_pem); ca.ok()) eo.ca_pem = std::move(*ca);
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
  ServiceOptions so = config->service;
  so.revocations = revocations->get();
  so.metrics = &metrics;
  AddEngineCollectors(engine->get(), &metrics);
  FederationService federation(engine->get(), so);
  AdminService admin(engine->get(), so);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config->listen, *creds, &port);
  builder.RegisterService(&federation);
  builder.RegisterService(&admin);
  builder.SetMaxReceiveMessageSize(4 << 20);
  // No port sharing: a second server on the same address fails to bind.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Bounded: past these, calls are refused (RESOURCE_EXHAUSTED), not queued.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 32);
  grpc::ResourceQuota quota("fedtune-coordinator");
  quota.SetMaxThreads(config->max_threads);
  builder.SetResourceQuota(quota);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    spdlog::critical("cannot listen on {} (address in use, or not an address of this host?)", config->listen);
    return 1;
  }
  if (!port_file.empty()) {
    if (auto st = WriteFileAtomically(port_file, std::to_string(port) + "\n", 0644); !st.ok()) {
      spdlog::critical("{}", std::string(st.message()));
      return 1;
    }
  }
  spdlog::info("listening on {} (port {}), {} enrolled sites, {} admins, state in {}", config->listen, port,
               config->enrolled_sites.size(), so.admins.size(), config->state_dir);
  auto http = StartHttpEndpoint(*config, so, &metrics, engine->get());
  if (!http.ok()) {
    spdlog::critical("[http]: {}", std::string(http.status().message()));
    server->Shutdown(std::chrono::system_clock::now());
    return 1;
  }
  if (*http != nullptr && !http_port_file.empty()) {
    if (auto st = WriteFileAtomically(http_port_file, std::to_string((*http)->port()) + "\n", 0644); !st.ok()) {
      spdlog::critical("{}", std::string(st.message()));
      return 1;
    }
  }

  std::atomic<bool> stop{false};
  std::thread ticker([&] {
    uint64_t seen = 0;
    while (!stop) {
      if (auto st = (*engine)->Tick(); !st.ok()) spdlog::error("tick: {}", std::string(st.message()));
      seen = (*engine)->WaitForChange(seen, 250);
    }
  });
  std::thread crl_watch;
  if ((*revocations)->enabled()) crl_watch = std::thread(WatchCrl, revocations->get(), tls, &stop);
  spdlog::info("signal {}: shutting down", signals.Wait());
  stop = true;
  if (*http != nullptr) (*http)->Stop();
  (*engine)->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ticker.join();
  if (crl_watch.joinable()) crl_watch.join();
  return 0;
}

int Backup(const std::string& config_path, const std::string& out) {
  auto config = LoadCoordinatorConfig(config_path);
  if (!config.ok()) {
    std::cerr << "fedtune-coordinator: " << config.status().message() << "\n";
    return 2;
  }
  ::umask(077);
  auto st = BackupStateDirectory(config->state_dir, out);
  if (!st.ok()) {
    std::cerr << "fedtune-coordinator backup: " << st.message() << "\n";
    return 1;
  }
  std::cout << "backed up " << config->state_dir << " to " << out
            << " (checked with PRAGMA quick_check). To restore: stop the coordinator, move the state directory "
               "aside, copy "
            << out << " in its place, start it.\n";
  return 0;
}

}  // namespace
}  // namespace fedtune::coordinator

int main(int argc, char** argv) {
  CLI::App app{"fedtune-coordinator: the federation server. Site agents dial in over mutual TLS, train the jobs "
               "operators submit with `fedtune`, and only model updates and aggregate metrics come back."};
  app.require_subcommand(1);
  std::string config, port_file, http_port_file, out;
  CLI::App* serve = app.add_subcommand("serve", "Run the coordinator until SIGINT/SIGTERM");
  serve->add_option("--config", config, "coordinator.toml (see deploy/examples/coordinator.toml)")
      ->required()
      ->check(CLI::ExistingFile);
  serve->add_option("--port-file", port_file,
                    "write the bound port here once listening (useful with listen = \"127.0.0.1:0\")");
  serve->add_option("--http-port-file", http_port_file,
                    "write the [http] endpoint's bound port here once listening (with [http] listen = "
                    "\"127.0.0.1:0\")");
  serve->footer(
      "Example:\n  fedtune-coordinator serve --config /etc/fedtune/coordinator.toml\n"
      "With [http] listen set it also serves /metrics for Prometheus (plain HTTP on loopback, or HTTPS for the\n"
      "admin certificates of [admins] with tls = true), e.g.\n  curl http://127.0.0.1:9464/metrics");
  CLI::App* backup = app.add_subcommand(
      "backup", "Copy the state directory (database and model files) to a new folder; safe while serving");
  backup->add_option("--config", config, "coordinator.toml")->required()->check(CLI::ExistingFile);
  backup->add_option("--out", out, "the backup folder (must not exist yet)")->required();
  backup->footer(
      "Example (nightly, from cron):\n  fedtune-coordinator backup --config /etc/fedtune/coordinator.toml "
      "--out /backup/fedtune-$(date +%F)\nRestore: stop the coordinator, replace state_dir with the backup folder, "
      "start it.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (*backup) return fedtune::coordinator::Backup(config, out);
  return fedtune::coordinator::Serve(config, port_file, http_port_file);
}
