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
    c.binned.scores.push_back(ScoreBinCentre(ScoreBin(s)));
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

// Three sites' calibrated scores of a rare finding (prevalence 3 %, most
// negatives near 0): the pooled AUROC and AP from the histograms against the
// exact figures of the pooled cases. On such scores 100 equal-width bins
// over [0, 1] come out up to 0.009 (AUROC) and 0.019 (AP) below the exact
// value (tests/bench/pooling_error.py); logit bins stay within the bound
// they state, and the bound is small.
TEST(Pooling, SkewedScoresPoolWithinTheStatedBound) {
  std::mt19937_64 rng(5);
  std::normal_distribution<double> noise(0, 1);
  for (double spread : {1.0, 2.0, 3.0}) {
    ScoreHistogram pooled;
    BinarySample exact;
    for (int site = 0; site < 3; ++site) {
      ScoreHistogram h;
      for (int i = 0; i < 3000; ++i) {
        const bool pos = (rng() % 100) < 3;
        const double logit = (pos ? -1.0 : -5.5) + 0.4 * site + spread * noise(rng);
        const double p = 1 / (1 + std::exp(-logit));
        h.Add(p, pos);
        exact.scores.push_back(p);
        exact.labels.push_back(pos ? 1 : 0);
      }
      pooled.Merge(h);
    }
    const double auroc = Auroc(exact).value(), ap = AveragePrecision(exact).value();
    const double bound = HistogramAurocErrorBound(pooled);
    EXPECT_LE(std::abs(HistogramAuroc(pooled) - auroc), bound) << spread;
    EXPECT_LT(bound, 0.002) << spread;
    EXPECT_LT(std::abs(HistogramAuroc(pooled) - auroc), 5e-4) << spread;
    const Interval range = HistogramAveragePrecisionRange(pooled);
    EXPECT_LE(range.lower, ap + 1e-12) << spread;
    EXPECT_GE(range.upper, ap - 1e-12) << spread;
    EXPECT_LT(range.upper - range.lower, 0.01) << spread;
    EXPECT_LT(std::abs(HistogramAveragePrecision(pooled) - ap), 0.005) << spread;
  }
}

TEST(Pooling, BoundsAreExactForTheExtremeOrders) {
  // One bin holding 2 positives and 2 negatives: AUROC counted 0.5, truly
  // anywhere in [0, 1]; AP between (1/3 + 2/4) / 2 and 1.
  ScoreHistogram h;
  for (int i = 0; i < 2; ++i) {
    h.Add(0.3, true);
    h.Add(0.3, false);
  }
  EXPECT_DOUBLE_EQ(HistogramAuroc(h), 0.5);
  EXPECT_DOUBLE_EQ(HistogramAurocErrorBound(h), 0.5);
  const Interval r = HistogramAveragePrecisionRange(h);
  EXPECT_DOUBLE_EQ(r.upper, 1.0);
  EXPECT_DOUBLE_EQ(r.lower, (1.0 / 3 + 2.0 / 4) / 2);
  EXPECT_EQ(ScoreBin(0.5), kScoreBins / 2);
  EXPECT_NEAR(ScoreBinCentre(ScoreBin(0.9)), 0.9, 0.01);
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

namespace fedtune::metrics {
namespace {

// Youden's J of calling `score >= t` positive, from the raw scores.
double RawYouden(const std::vector<double>& scores, const std::vector<bool>& positive, double t) {
  double tp = 0, tn = 0, p = 0, n = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    (positive[i] ? p : n) += 1;
    if (positive[i] && scores[i] >= t) tp += 1;
    if (!positive[i] && scores[i] < t) tn += 1;
  }
  return tp / p + tn / n - 1;
}

TEST(Pooling, YoudenThresholdOfTheHistogramIsTheBestBinEdgeOnTheRawScores) {
  std::mt19937 rng(11);
  std::normal_distribution<double> pos(1.0, 1.0), neg(-0.5, 1.2);
  std::vector<double> scores;
  std::vector<bool> positive;
  ScoreHistogram h;
  for (int i = 0; i < 3000; ++i) {
    const bool p = i % 4 == 0;
    const double s = 1 / (1 + std::exp(-(p ? pos(rng) : neg(rng))));
    scores.push_back(s);
    positive.push_back(p);
    h.Add(s, p);
  }
  const double t = HistogramYoudenThreshold(h);
  ASSERT_TRUE(std::isfinite(t));
  const double j = RawYouden(scores, positive, t);
  // No bin edge does better on the raw scores (a score in bin b or above is
  // >= b's lower edge exactly when it falls in bin b or above).
  for (int b = 1; b < kScoreBins; ++b) {
    const double edge = 1 / (1 + std::exp(-(static_cast<double>(b) / kScoreBins * 2 * kLogitRange - kLogitRange + 1e-9)));
    EXPECT_LE(RawYouden(scores, positive, edge), j + 1e-12) << "bin " << b;
  }
  EXPECT_GT(j, 0.3);
  ScoreHistogram empty;
  empty.Add(0.4, false);
  EXPECT_TRUE(std::isnan(HistogramYoudenThreshold(empty)));
}

}  // namespace
}  // namespace fedtune::metrics
