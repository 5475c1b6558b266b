// Pooling evaluation results across sites from counts only. Sites never send
// per-case scores: they send, per finding, the confusion counts at their
// operating threshold and class-conditional score histograms. From those the
// coordinator computes pooled sensitivity, specificity, F1 and MCC exactly
// (each site at its own threshold), and pooled AUROC (with DeLong's interval)
// and average precision exactly for the binned scores.
//
// Bins are uniform in the logit of the score, log(p / (1 - p)), over
// [-kLogitRange, kLogitRange] (1/32 of a logit wide), with everything beyond
// in the end bins. Calibrated scores of a rare finding crowd near 0, where
// equal-width probability bins lump most negatives together (100 of them
// were measured up to 0.016 below the exact AUROC); logit bins spread them.
// The only unknown is the order of cases that share a bin, so the error of
// the pooled figures is bounded from the histogram itself:
// HistogramAurocErrorBound and HistogramAveragePrecisionRange.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/metrics/metrics.h"

namespace fedtune::metrics {

inline constexpr int kScoreBins = 1024;
inline constexpr double kLogitRange = 16.0;

// The bin of a score in [0, 1] (values outside are clamped; 0 and 1 fall in
// the end bins).
int ScoreBin(double score);
// The score at the centre of a bin (for tests and plots).
double ScoreBinCentre(int bin);

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

// The most the binned AUROC can differ from the exact AUROC of the cases that
// made the histogram: the binned figure counts pairs sharing a bin as one
// half, so 0.5 x sum_b pos_b neg_b / (P N). NaN when a class is empty.
double HistogramAurocErrorBound(const ScoreHistogram& h);

// Average precision with each bin one threshold step (descending scores).
double HistogramAveragePrecision(const ScoreHistogram& h);
// Where the exact average precision lies: every bin's positives ranked above
// its negatives (upper) or below them (lower).
Interval HistogramAveragePrecisionRange(const ScoreHistogram& h);

// The threshold maximising Youden's J (sensitivity + specificity - 1) over
// the bins' lower edges: a score in bin b or above is called positive, and
// the returned score is bin b's lower edge, so ScoreBin(threshold) == b.
// Ties go to the higher threshold; NaN when a class is empty.
double HistogramYoudenThreshold(const ScoreHistogram& h);

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
