// What a study writes from its cells' results (study.cc): table.md (Table 1
// shaped: per size and arm, each finding's AUROC, AUPRC, sensitivity,
// specificity and F1 and their macro means with 95% intervals), results.csv
// (one row per cell x finding x metric), results.json (every cell),
// curves.svg (learning curves, or the strategies' intervals) and, for a
// strategies study, paired.csv (DeLong's paired test of each strategy
// against the first, per seed and finding). No torch, no engine: plain
// functions over the cells' JSON, tested on their own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace fedtune::sim {

struct StudyOutcome;

struct StudyDescription {
  std::string kind;  // scaling, methods, strategies
  std::vector<std::string> sites;
  std::string architecture;
  int image_size = 0;
  int epochs = 0, local_epochs = 0, bootstrap_resamples = 0;
  std::vector<std::string> findings;
  std::vector<std::string> strategies;  // the first is the paired tests' reference
  int64_t test_cases = 0, val_cases = 0;
};

// The seed's reference timings (Table 1 of the platform paper: ViT-B at
// 518 px on a GPU): seconds per epoch at 100 and at 4000 training images.
inline constexpr double kSeedSecondsPerEpochAt100 = 26;
inline constexpr double kSeedSecondsPerEpochAt4000 = 12.1 * 60;

// The learning-curve chart: macro AUROC against training images (log
// scale), one line per series with its 95% band. Each point: x, y, lower,
// upper; a series whose name starts with "local:" is dashed.
struct CurvePoint {
  double x, y, lower, upper;
};
std::string LearningCurveSvg(const std::string& title,
                             const std::vector<std::pair<std::string, std::vector<CurvePoint>>>& series);

// Writes the files above into `dir` and records their paths in *outcome.
absl::Status WriteStudyOutputs(const StudyDescription& d, const std::vector<nlohmann::json>& cells,
                               const std::string& dir, StudyOutcome* outcome);

}  // namespace fedtune::sim
