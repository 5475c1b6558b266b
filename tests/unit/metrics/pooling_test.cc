// Pooling from counts: the histogram statistics equal the per-case metrics of
// metrics.h computed on the binned scores.
#include "common/metrics/pooling.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace fedtune::metrics {
namespace {

// Random scores with ties, their histogram, and the same scores snapped to
// their bin (what the histogram can know).
struct Case {
  ScoreHistogram hist;
  BinarySample binned;
};

Case Make(uint64_t seed, int n, double shift) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 0.18);
  Case c;
  for (int i = 0; i < n; ++i) {
    const bool pos = (rng() % 3) == 0;
    const double s = std::clamp(0.4 + (pos ? shift : 0.0) + noise(rng), 0.0, 1.0);
    c.hist.Add(s, pos);
    const double bin = std::min(std::floor(s * kScoreBins), kScoreBins - 1.0);
    c.binned.scores.push_back((bin + 0.5) / kScoreBins);
    c.binned.labels.push_back(pos ? 1 : 0);
  }
  return c;
}

TEST(Pooling, HistogramAurocAndIntervalEqualDeLongOnBinnedScores) {
  for (uint64_t seed : {1, 2, 3}) {
    const Case c = Make(seed, 400, 0.2);
    EXPECT_NEAR(HistogramAuroc(c.hist), Auroc(c.binned).value(), 1e-12);
    const Interval h = HistogramAurocCi(c.hist);
    const Interval d = DeLongAurocCi(c.binned).value();
    EXPECT_NEAR(h.lower, d.lower, 1e-9);
    EXPECT_NEAR(h.upper, d.upper, 1e-9);
    EXPECT_NEAR(HistogramAveragePrecision(c.hist), AveragePrecision(c.binned).value(), 1e-12);
  }
}

TEST(Pooling, MergedHistogramsEqualTheHistogramOfTheUnion) {
  Case a = Make(7, 150, 0.3), b = Make(8, 90, 0.1);
  ScoreHistogram merged = a.hist;
  merged.Merge(b.hist);
  BinarySample all = a.binned;
  all.scores.insert(all.scores.end(), b.binned.scores.begin(), b.binned.scores.end());
  all.labels.insert(all.labels.end(), b.binned.labels.begin(), b.binned.labels.end());
  EXPECT_EQ(merged.num_positives() + merged.num_negatives(), 240);
  EXPECT_NEAR(HistogramAuroc(merged), Auroc(all).value(), 1e-12);
}

TEST(Pooling, EmptyClassGivesNaNAndEdgesLandInTheEndBins) {
  ScoreHistogram h;
  h.Add(1.0, true);
  h.Add(0.0, true);
  h.Add(-3, true);  // clamped
  EXPECT_EQ(h.positives.back(), 1);
  EXPECT_EQ(h.positives.front(), 2);
  EXPECT_TRUE(std::isnan(HistogramAuroc(h)));
  EXPECT_TRUE(std::isnan(HistogramAurocCi(h).lower));
}

TEST(Pooling, ConfusionMetricsAndWilson) {
  ConfusionCounts c{40, 10, 45, 5};
  EXPECT_DOUBLE_EQ(c.sensitivity(), 40.0 / 45);
  EXPECT_DOUBLE_EQ(c.specificity(), 45.0 / 55);
  EXPECT_DOUBLE_EQ(c.f1(), 80.0 / 95);
  EXPECT_NEAR(c.mcc(), (40.0 * 45 - 10.0 * 5) / std::sqrt(50.0 * 45 * 55 * 50), 1e-12);
  // Wilson 95 % for 8/10: (0.4902, 0.9433) (Newcombe 1998, table I style values).
  const Interval w = WilsonInterval(8, 10);
  EXPECT_NEAR(w.lower, 0.4902, 1e-4);
  EXPECT_NEAR(w.upper, 0.9433, 1e-4);
  EXPECT_TRUE(std::isnan(WilsonInterval(0, 0).lower));
}

}  // namespace
}  // namespace fedtune::metrics
