// fedtune-site subcommands: one options struct, Setup (CLI11) and Run each.
// Run returns the process exit code: 0 done, 1 failed (message on stderr).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace fedtune::site {

struct SynthCommand {
  std::string out;
  std::string site = "hospital";
  int patients = 20;
  int size = 512;
  std::string style = "plain";
  std::string findings;    // "" (the default four), "vindr17" or names separated by commas
  std::string prevalence;  // "0.3,0.25,0.2,0.15"
  bool co_occurrence = false;
  double gamma = 1.0, noise = 0.0, blur = 0.0;
  uint64_t seed = 1;
  std::string label_key = "file_stem";
  double burned_in_fraction = 0;
  bool markers = false;
  bool json = false;
};
void SetupSynth(CLI::App& app, SynthCommand& cmd);
int RunSynth(const SynthCommand& cmd);

struct IngestCommand {
  std::string config;
  std::string source;
  std::string labels;
  bool retry_quarantined = false;
  bool json = false;
};
void SetupIngest(CLI::App& app, IngestCommand& cmd);
int RunIngest(const IngestCommand& cmd);

struct StatsCommand {
  std::string config;
  bool shareable = false;
  bool json = false;
};
void SetupStats(CLI::App& app, StatsCommand& cmd);
int RunStats(const StatsCommand& cmd);

struct LabelsCommand {
  std::string config;
  std::string labels;
  bool findings_changed = false;
  bool json = false;
};
void SetupLabels(CLI::App& app, LabelsCommand& cmd);
int RunLabelsImport(const LabelsCommand& cmd);

struct SplitCommand {
  std::string config;
  bool resplit = false;
  bool json = false;
};
void SetupSplit(CLI::App& app, SplitCommand& cmd);
int RunSplit(const SplitCommand& cmd);

struct ReceiveCommand {
  std::string config;
  std::string port_file;
  bool json = false;
};
void SetupReceive(CLI::App& app, ReceiveCommand& cmd);
int RunReceive(const ReceiveCommand& cmd);

struct QuarantineCommand {
  std::string config;
  double older_than_days = 0;
  bool json = false;
};
void SetupQuarantine(CLI::App& app, QuarantineCommand& cmd);
int RunQuarantineList(const QuarantineCommand& cmd);
int RunQuarantinePurge(const QuarantineCommand& cmd);

// run_command.cc: the daemon (site-agent/runner).
struct RunCommand {
  std::string config;
  std::string inference_http_port_file;
  std::string inference_grpc_port_file;
};
void SetupRun(CLI::App& app, RunCommand& cmd);
int RunRun(const RunCommand& cmd);

// serve_command.cc: the inference service (site-agent/runner).
struct ServeCommand {
  std::string config;
  std::string http_port_file;
  std::string grpc_port_file;
};
void SetupServe(CLI::App& app, ServeCommand& cmd);
int RunServe(const ServeCommand& cmd);

// backbone_command.cc: `backbone pretrain` on a workspace of public data.
struct BackboneCommand {
  std::string workspace, arch = "vit-tiny/16", out, findings;
  int image_size = 0, epochs = 10, batch_size = 32;
  double learning_rate = 5e-4;
  int64_t seed = 0;
  bool json = false;
};
void SetupBackbone(CLI::App& app, BackboneCommand& cmd);
int RunBackbonePretrain(const BackboneCommand& cmd);

}  // namespace fedtune::site
