// Clinical classification metrics for one binary finding (no torch).
//
// Conventions, matching scikit-learn so figures can be checked against it:
// a higher score means "more likely positive"; a case is called positive when
// score >= threshold; labels are 1 (positive), 0 (negative) or anything else
// (uncertain / not read), which is left out of every computation.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::metrics {

// Scores and 0/1 labels with unlabelled cases removed.
struct BinarySample {
  std::vector<double> scores;
  std::vector<int> labels;
  int64_t positives() const;
  int64_t negatives() const;
};

// Keeps the cases whose label is 0 or 1. INVALID_ARGUMENT if the spans differ
// in length or a score is not finite.
absl::StatusOr<BinarySample> MakeSample(std::span<const double> scores, std::span<const float> labels);

// Area under the ROC curve: the Mann-Whitney statistic with tied scores
// counted as one half. INVALID_ARGUMENT when either class is absent.
absl::StatusOr<double> Auroc(const BinarySample& s);

// Average precision (area under the precision-recall curve as scikit-learn's
// average_precision_score defines it: sum over thresholds of
// (R_n - R_{n-1}) P_n, tied scores forming one threshold).
// INVALID_ARGUMENT when there are no positives.
absl::StatusOr<double> AveragePrecision(const BinarySample& s);

struct Confusion {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  double sensitivity() const;  // recall; 0 when there are no positives
  double specificity() const;  // 0 when there are no negatives
  double precision() const;    // 0 when nothing is called positive
  double f1() const;           // 0 when precision + recall is 0
  double mcc() const;          // 0 when any margin is empty (scikit-learn's convention)
};

Confusion ConfusionAt(const BinarySample& s, double threshold);

// The threshold maximizing Youden's J = sensitivity + specificity - 1 over the
// distinct scores (ties broken toward the higher threshold).
// INVALID_ARGUMENT when either class is absent.
absl::StatusOr<double> YoudenThreshold(const BinarySample& s);

struct RocPoint {
  double fpr;
  double tpr;
  double threshold;  // +infinity for the (0, 0) corner
};

// The ROC curve with one point per distinct score (plus the (0, 0) corner),
// in increasing fpr. INVALID_ARGUMENT when either class is absent.
absl::StatusOr<std::vector<RocPoint>> RocCurve(const BinarySample& s);

// At most `max_points` points of `curve` for plotting: keeps both ends and the
// points spread evenly along the curve's length, so the shape survives.
std::vector<RocPoint> ThinRoc(const std::vector<RocPoint>& curve, size_t max_points);

struct Interval {
  double lower;
  double upper;
};

// DeLong's variance of the AUROC (DeLong, DeLong & Clarke-Pearson 1988, with
// the O(n log n) midrank algorithm of Sun & Xu 2014) and the normal-theory
// confidence interval at `level`, clipped to [0, 1].
absl::StatusOr<double> DeLongVariance(const BinarySample& s);
absl::StatusOr<Interval> DeLongAurocCi(const BinarySample& s, double level = 0.95);

// DeLong's paired test of two models' AUROC on the same cases (`a` and `b`
// hold the same cases in the same order, with the same labels): the
// difference, its z statistic from the covariance of the two models'
// placement values, and the two-sided p-value. INVALID_ARGUMENT when the
// cases differ or a class is absent.
struct PairedTest {
  double auroc_a = 0, auroc_b = 0, difference = 0, z = 0, p_value = 1;
};
absl::StatusOr<PairedTest> DeLongPairedTest(const BinarySample& a, const BinarySample& b);

// Percentile bootstrap interval of `metric` over `resamples` resamples drawn
// with replacement within each class (so every resample has both classes),
// seeded: the same inputs and seed give the same interval.
using SampleMetric = double (*)(const BinarySample&, double threshold);
absl::StatusOr<Interval> BootstrapCi(const BinarySample& s, SampleMetric metric, double threshold,
                                     int resamples, uint64_t seed, double level = 0.95);

// SampleMetric adapters for BootstrapCi.
double SensitivityAt(const BinarySample& s, double threshold);
double SpecificityAt(const BinarySample& s, double threshold);
double F1At(const BinarySample& s, double threshold);
double MccAt(const BinarySample& s, double threshold);
double AveragePrecisionOf(const BinarySample& s, double threshold);  // threshold unused

}  // namespace fedtune::metrics
