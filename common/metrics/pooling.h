// Pooling evaluation results across sites from counts only. Sites never send
// per-case scores: they send, per finding, the confusion counts at their
// operating threshold and class-conditional score histograms (kScoreBins
// equal bins over [0, 1]). From those the coordinator computes pooled
// sensitivity, specificity, F1 and MCC exactly (each site at its own
// threshold), and pooled AUROC (with DeLong's interval) and average precision
// exactly for the binned scores, i.e. to within the bin width.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/metrics/metrics.h"

namespace fedtune::metrics {

inline constexpr int kScoreBins = 100;

struct ScoreHistogram {
  std::vector<int64_t> positives = std::vector<int64_t>(kScoreBins, 0);
  std::vector<int64_t> negatives = std::vector<int64_t>(kScoreBins, 0);
  void Add(double score, bool positive);
  void Merge(const ScoreHistogram& other);
  int64_t num_positives() const;
  int64_t num_negatives() const;
};

// Mann-Whitney AUROC of the binned scores (ties within a bin count one half)
// and DeLong's interval computed from the bins' placement values. NaN (and a
// NaN interval) when a class is empty.
double HistogramAuroc(const ScoreHistogram& h);
Interval HistogramAurocCi(const ScoreHistogram& h, double level = 0.95);

// Average precision with each bin one threshold step (descending scores).
double HistogramAveragePrecision(const ScoreHistogram& h);

struct ConfusionCounts {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0;
  double sensitivity() const;
  double specificity() const;
  double f1() const;
  double mcc() const;
};

// Wilson score interval of a proportion k / n (NaN when n = 0).
Interval WilsonInterval(int64_t k, int64_t n, double level = 0.95);

}  // namespace fedtune::metrics
