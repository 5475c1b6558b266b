// Studies: many simulated runs over one federation, each a cell of a grid
// (training-set size x variant x seed x arm), every cell's model evaluated on
// the same pooled test set (all sites' test splits) with the same code, and
// the results written as a table, CSV, JSON and SVG.
//
//   scaling     Table 1 of the data-scaling protocol: nested training
//               subsets of the given sizes, each trained pooled (all the
//               sites' subsets in one place, the centralised upper bound a
//               simulation alone can run), federated across the sites, and
//               local-only at each site; the best epoch (pooled, local) or
//               round (federated) by validation macro AUROC.
//   methods     the fine-tuning methods (LoRA, BitFit, linear probe, full)
//               at few-shot and full sizes, the same three arms, with MCC
//               and PR-AUC.
//   strategies  the job spec's aggregation strategies, federated, over
//               several seeds, each compared with the first strategy by
//               DeLong's paired test on the same test cases.
//
// A study is resumable: each finished cell is kept under
// <work_dir>/cells/ and a federated cell's engine state under
// <work_dir>/runs/<cell>/, so a killed study continues where it stopped.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "simulator/simulation.h"

namespace fedtune::sim {

enum class StudyKind { kScaling, kMethods, kStrategies };
std::string_view StudyKindName(StudyKind kind);

struct StudyConfig {
  StudyKind kind = StudyKind::kScaling;
  // The sites, the base job (backbone, model, optimiser) and the study's
  // folder (work_dir).
  SimulationConfig federation;
  // Training images across the federation (each site's nested subset holds
  // an equal share); 0 = everything the sites hold.
  std::vector<int64_t> sizes;
  std::vector<std::string> arms;        // "pooled", "federated", "local"
  std::vector<std::string> methods;     // empty: the job's
  std::vector<std::string> strategies;  // empty: the job's
  std::vector<int64_t> seeds = {0};
  int epochs = 4;        // pooled and local epochs; federated: rounds x local_epochs
  int local_epochs = 1;  // epochs per federated round
  int bootstrap_resamples = 200;
  // Per method learning rates ([study.learning_rate]); absent: the job's.
  std::vector<std::pair<std::string, double>> learning_rates;
};

// study.toml: [study] (sizes, arms, methods, strategies, seeds, epochs,
// local_epochs, bootstrap_resamples, [study.learning_rate]) next to
// sim.toml's [simulation] and [[site]] / [synth]. Defaults depend on the
// kind (see deploy/examples/study.toml).
absl::StatusOr<StudyConfig> LoadStudyConfig(const std::string& path, StudyKind kind);

struct StudyOutcome {
  int cells = 0;
  int ran = 0;      // trained in this invocation
  int reused = 0;   // finished before (resumed study)
  int skipped = 0;  // not applicable (e.g. FFA-LoRA with BitFit), with the reason in the table
  std::string table_md, results_csv, results_json, curves_svg;
  double seconds = 0;
};

// Runs every cell not finished yet, then writes table.md, results.csv,
// results.json and curves.svg (and paired.csv for strategies) in work_dir.
absl::StatusOr<StudyOutcome> RunStudy(StudyConfig config, const SimLog& log = {});

}  // namespace fedtune::sim
