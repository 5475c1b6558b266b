// The in-process federation: N virtual sites run through the same round
// engine, strategies, task executor and model code as a real federation;
// only the transport is swapped. Where a site daemon would call the
// coordinator over mutual-TLS gRPC, the simulator calls the engine directly
// (Join, Poll, WeightsForTask, Progress, Submit), and the engine runs on a
// virtual clock that moves only when no site has work, so a slow machine
// never misses a round's deadline. Same job, same sites, same seeds: the
// same global weights as real processes (tests/integration
// Federation.SimulatedJobEndsWithTheRealFederationsWeights).
//
// A simulation has one trust domain (the simulator reads every workspace),
// so it is for studies and rehearsals, never for real hospitals' data across
// institutions.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "fedtune/v1/admin.pb.h"
#include "site-agent/runner/task_executor.h"

namespace fedtune::sim {

// One virtual site: an ingested workspace and what its site.toml says about
// training and disclosure (site::ExecutorOptionsFor). threads = 0 shares the
// machine's cores among the sites training at once.
using VirtualSite = site::ExecutorOptions;

// [synth]: a synthetic federation written and ingested once under
// <work_dir>/sites (fedtune-site synth + ingest, in-process).
struct SynthFederation {
  std::vector<std::string> sites = {"hospital-a", "hospital-b", "hospital-c"};
  std::vector<int> patients = {120, 90, 60};    // per site
  std::vector<std::string> styles = {"plain", "mono1-rle", "cr"};  // per site, cycled
  int dicom_size = 128;  // stored image side
  // Findings drawn (ingest::VinDrSynthFindings() names): empty = the default
  // four at their default prevalences; otherwise VinDr-like prevalences.
  std::vector<std::string> findings;
  bool co_occurrence = false;
  // Per-site shifts, one value per site (or none: no shift): contrast gamma,
  // extra noise, blur radius, and a factor on every prevalence.
  std::vector<double> gamma, noise, blur, prevalence_scale;
  uint64_t seed = 1;
  int k_threshold = 5;
  int64_t min_train_images = 20;
  // Base weights for every site; empty: a backbone of the job's
  // architecture written to <work_dir>/backbone.safetensors (and the job's
  // [backbone] sha256 set to it): pretrained on a public synthetic set of
  // `pretrain_patients` patients (fedtune-site backbone pretrain) for
  // `pretrain_epochs`, or random (seeded by `seed`) when pretrain_patients is 0.
  std::string backbone;
  int pretrain_patients = 0;
  int pretrain_epochs = 10;
};

struct SimulationConfig {
  std::string job_toml;    // the job, as `fedtune job submit` takes it
  std::string job_source;  // its file name, for errors
  std::string work_dir;    // the simulation's own files (state/, sites/, report)
  int parallel = 1;        // sites training at once (one device each, or the cores shared)
  int bootstrap_resamples = -1;  // > = 0: overrides every site's
  std::vector<VirtualSite> sites;
  std::optional<SynthFederation> synth;
};

// sim.toml (deploy/examples/sim.toml): [simulation] job, work_dir,
// parallel; then either [[site]] tables (config = "a site.toml" whose
// workspace is ingested) or one [synth] table. Paths are relative to the
// file. Errors name the file and key. `study` also accepts the [study]
// table of a study.toml (read by LoadStudyConfig).
absl::StatusOr<SimulationConfig> LoadSimulationConfig(const std::string& path, bool study = false);

// Writes and ingests config->synth's sites (once: a site already prepared is
// kept) and fills config->sites; with no backbone given, writes a random one
// and sets the job's backbone sha256 to it. No-op without [synth].
using SimLog = std::function<void(const std::string& line)>;
absl::Status PrepareSynthetic(SimulationConfig* config, const SimLog& log = {});

// The job's text with keys replaced: how studies derive their runs from one
// job. Each assignment is `table.key` = a TOML value's text; an empty value
// removes the key, and a bare `table` with an empty value the whole table.
absl::StatusOr<std::string> PatchJob(const std::string& job_toml,
                                     const std::vector<std::pair<std::string, std::string>>& assignments);

struct SimulationResult {
  std::string job_id;
  v1::JobStatus status;
  std::string final_weights;  // the last global version's safetensors
  std::vector<std::string> version_files;  // global versions 0..rounds, in order
  bool resumed = false;       // an unfinished job of the same name was continued
  double seconds = 0;
};

// Runs the job in <work_dir>/state. A job of the same name already there is
// continued where it stopped (the engine's state is crash-safe), or, when it
// finished, returned as it is. FAILED_PRECONDITION for what a simulation
// cannot run (secure aggregation) and for no sites.
absl::StatusOr<SimulationResult> Simulate(const SimulationConfig& config, const SimLog& log = {});

// report.html, report.json and metrics.csv of a finished simulated job in
// `out_dir` (the same report `fedtune report` renders).
absl::Status WriteSimulationReport(const SimulationConfig& config, const SimulationResult& result,
                                   const std::string& out_dir);

}  // namespace fedtune::sim
