// Multi-label evaluation of a model's scores on one split: every metric of
// metrics.h per finding, with 95% intervals and a thinned ROC curve, plus macro
// means over the findings that could be evaluated.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics/metrics.h"

namespace fedtune::metrics {

// How a finding's operating threshold is chosen on the validation split.
enum class ThresholdPolicy {
  kYouden,  // maximize sensitivity + specificity - 1
  kFixed,   // use EvaluationOptions::fixed_threshold
};

struct EvaluationOptions {
  ThresholdPolicy policy = ThresholdPolicy::kYouden;
  double fixed_threshold = 0.5;
  int bootstrap_resamples = 1000;  // 0 disables the bootstrap intervals
  uint64_t seed = 0;
  double level = 0.95;
  size_t roc_points = 50;
};

struct FindingResult {
  std::string finding;
  int64_t positives = 0;
  int64_t negatives = 0;
  // False when a class is absent: the metrics below are then NaN.
  bool evaluable = false;
  double auroc = 0, auprc = 0;
  double threshold = 0;
  double sensitivity = 0, specificity = 0, f1 = 0, mcc = 0;
  Interval auroc_ci{0, 0};  // DeLong
  Interval auprc_ci{0, 0}, sensitivity_ci{0, 0}, specificity_ci{0, 0}, f1_ci{0, 0}, mcc_ci{0, 0};  // bootstrap
  std::vector<RocPoint> roc;  // thinned
};

struct EvaluationResult {
  std::vector<FindingResult> findings;
  // Means over the evaluable findings (NaN when none is).
  double macro_auroc = 0, macro_auprc = 0, macro_sensitivity = 0, macro_specificity = 0,
         macro_f1 = 0, macro_mcc = 0;
};

// `scores` and `labels` are row-major [cases x findings.size()]; labels other
// than 0/1 are left out per finding. INVALID_ARGUMENT on a size mismatch or a
// non-finite score.
absl::StatusOr<std::vector<double>> ChooseThresholds(const std::vector<std::string>& findings,
                                                     std::span<const double> scores,
                                                     std::span<const float> labels,
                                                     const EvaluationOptions& options);

// Evaluates at the given per-finding thresholds (from ChooseThresholds on the
// validation split).
absl::StatusOr<EvaluationResult> Evaluate(const std::vector<std::string>& findings,
                                          std::span<const double> scores,
                                          std::span<const float> labels,
                                          const std::vector<double>& thresholds,
                                          const EvaluationOptions& options);

// 95% intervals of the macro means (over the findings evaluable in each
// resample) at fixed per-finding thresholds: a percentile bootstrap over
// cases (whole rows, so the findings' dependence is kept), seeded. A
// resample where no finding is evaluable is drawn again (at most 10 times
// the resamples in all); INVALID_ARGUMENT on mismatched sizes.
struct MacroIntervals {
  Interval auroc{0, 0}, auprc{0, 0}, sensitivity{0, 0}, specificity{0, 0}, f1{0, 0}, mcc{0, 0};
};
absl::StatusOr<MacroIntervals> BootstrapMacroIntervals(size_t num_findings, std::span<const double> scores,
                                                       std::span<const float> labels,
                                                       const std::vector<double>& thresholds, int resamples,
                                                       uint64_t seed, double level = 0.95);

// Macro mean of per-finding AUROC over findings with both classes (NaN when
// none): the figure used to pick the best epoch.
double MacroAuroc(size_t num_findings, std::span<const double> scores, std::span<const float> labels);
// The mean of the values that are not NaN (NaN when none is).
double MeanOfDefined(std::span<const double> values);
// Each finding's AUROC (NaN where it has not both classes), in order.
std::vector<double> FindingAurocs(size_t num_findings, std::span<const double> scores, std::span<const float> labels);

}  // namespace fedtune::metrics
