// What the `fedtune` command groups share: the global options, the Admin
// API client, failure and number formatting, and one Setup function per
// command group (job_commands.cc, sites_command.cc, model_commands.cc,
// report_command.cc, backbone_command.cc).
#pragma once

#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "fedtune/v1/admin.grpc.pb.h"

namespace fedtune::cli {

// The options every command takes (before or after the command).
struct Globals {
  std::string coordinator = "127.0.0.1:7443";
  std::string ca, cert, key;
  bool json = false;
};

// The commands' own options, bound by their Setup functions.
struct Args {
  std::string arg, out, export_backbone, arch = "vit-tiny/16";
  int round = -1;
  int reconnect_seconds = 300;
  bool best = false, rollback = false, no_pdf = false;
  int64_t seed = 0;
  int image_size = 0;
};

// Each adds its command group to `app`; the callbacks set `code` to the
// process exit code.
void SetupJob(CLI::App& app, const Globals& g, Args& a, int& code);
void SetupSites(CLI::App& app, const Globals& g, int& code);
void SetupModel(CLI::App& app, const Globals& g, Args& a, int& code);
void SetupReport(CLI::App& app, const Globals& g, Args& a, int& code);
void SetupBackbone(CLI::App& app, const Globals& g, Args& a, int& code);
// `simulate` and `study` are fedtune-sim's (simulate_command.cc).
void SetupSimulatorCommands(CLI::App& app);
bool IsSimulatorCommand(int argc, char** argv);
int RunSimulator(int argc, char** argv);

// The first executable `name` on PATH (like `command -v`).
bool Which(const std::string& name, std::string* path);
// One line on stderr ("fedtune: ..."), and 1.
int Fail(const std::string& what);
// A gRPC failure, with a hint for the usual causes.
int Fail(const grpc::Status& s);
// --json: see proto_json.h for the convention.
std::string Json(const google::protobuf::Message& m);
// Local time of a Unix time in ms ("-" for none).
std::string When(int64_t unix_ms);
// `v` with `digits` decimals, "-" when not finite or zero.
std::string Num(double v, int digits = 4);
// A macro AUROC as shipped: "n/a" when no finding was shared and defined.
std::string Macro(const v1::EvaluationMetrics& m);

// The coordinator's Admin API over mutual TLS with the admin certificate.
class Admin {
 public:
  static absl::StatusOr<Admin> Connect(const Globals& g);
  std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return ctx;
  }
  std::unique_ptr<v1::Admin::Stub> stub;
};

}  // namespace fedtune::cli
