#include "common/metrics/pooling.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fedtune::metrics {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Two-sided normal quantile for the common levels (the project reports 95 %).
double Z(double level) {
  if (std::abs(level - 0.95) < 1e-12) return 1.959963984540054;
  if (std::abs(level - 0.90) < 1e-12) return 1.6448536269514722;
  if (std::abs(level - 0.99) < 1e-12) return 2.5758293035489004;
  // Acklam-free fallback: bisection on erfc.
  const double target = (1 - level) / 2;
  double lo = 0, hi = 10;
  for (int i = 0; i < 200; ++i) {
    const double mid = (lo + hi) / 2;
    (0.5 * std::erfc(mid / std::sqrt(2.0)) > target ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

}  // namespace

int ScoreBin(double score) {
  if (!(score > 0)) return 0;  // also NaN (Evaluate refuses non-finite scores before)
  const double p = std::clamp(score, 0.0, 1.0);
  if (p >= 1) return kScoreBins - 1;
  const double logit = std::log(p) - std::log1p(-p);
  const double x = (logit + kLogitRange) / (2 * kLogitRange) * kScoreBins;
  return static_cast<int>(std::clamp(std::floor(x), 0.0, static_cast<double>(kScoreBins - 1)));
}

double ScoreBinCentre(int bin) {
  const double logit = (bin + 0.5) / kScoreBins * 2 * kLogitRange - kLogitRange;
  return 1 / (1 + std::exp(-logit));
}

double HistogramYoudenThreshold(const ScoreHistogram& h) {
  const double P = static_cast<double>(h.num_positives());
  const double N = static_cast<double>(h.num_negatives());
  if (P == 0 || N == 0) return std::nan("");
  // From the top bin down: positives at or above b (true positives) and
  // negatives below b (true negatives).
  int64_t tp = 0, fp = 0;
  double best_j = -2;
  int best_bin = kScoreBins - 1;
  for (int b = kScoreBins - 1; b >= 0; --b) {
    tp += h.positives[static_cast<size_t>(b)];
    fp += h.negatives[static_cast<size_t>(b)];
    const double j = static_cast<double>(tp) / P + (N - static_cast<double>(fp)) / N - 1;
    if (j > best_j + 1e-12) {
      best_j = j;
      best_bin = b;
    }
  }
  if (best_bin == 0) return 0.0;  // everything positive
  const double logit = static_cast<double>(best_bin) / kScoreBins * 2 * kLogitRange - kLogitRange;
  // A hair above the edge, so rounding cannot put the edge in the bin below.
  return 1 / (1 + std::exp(-(logit + 1e-9)));
}

void ScoreHistogram::Add(double score, bool positive) {
  (positive ? positives : negatives)[static_cast<size_t>(ScoreBin(score))]++;
}

void ScoreHistogram::Merge(const ScoreHistogram& o) {
  for (size_t i = 0; i < positives.size() && i < o.positives.size(); ++i) positives[i] += o.positives[i];
  for (size_t i = 0; i < negatives.size() && i < o.negatives.size(); ++i) negatives[i] += o.negatives[i];
}

int64_t ScoreHistogram::num_positives() const {
  int64_t n = 0;
  for (int64_t v : positives) n += v;
  return n;
}
int64_t ScoreHistogram::num_negatives() const {
  int64_t n = 0;
  for (int64_t v : negatives) n += v;
  return n;
}

double HistogramAuroc(const ScoreHistogram& h) {
  const double p = static_cast<double>(h.num_positives()), n = static_cast<double>(h.num_negatives());
  if (p == 0 || n == 0) return kNaN;
  double below = 0, sum = 0;
  for (size_t i = 0; i < h.positives.size(); ++i) {
    sum += static_cast<double>(h.positives[i]) * (below + 0.5 * static_cast<double>(h.negatives[i]));
    below += static_cast<double>(h.negatives[i]);
  }
  return sum / (p * n);
}

Interval HistogramAurocCi(const ScoreHistogram& h, double level) {
  const double p = static_cast<double>(h.num_positives()), n = static_cast<double>(h.num_negatives());
  if (p < 2 || n < 2) return {kNaN, kNaN};
  const double auc = HistogramAuroc(h);
  const size_t bins = h.positives.size();
  // Placement values: a positive in bin i beats the negatives below it (and
  // half of those in its bin); a negative in bin j is beaten by the positives
  // above it (and half of those in its bin).
  std::vector<double> neg_below(bins + 1, 0), pos_above(bins + 1, 0);
  for (size_t i = 0; i < bins; ++i) neg_below[i + 1] = neg_below[i] + static_cast<double>(h.negatives[i]);
  for (size_t i = bins; i-- > 0;) pos_above[i] = pos_above[i + 1] + static_cast<double>(h.positives[i]);
  double s10 = 0, s01 = 0;
  for (size_t i = 0; i < bins; ++i) {
    const double v10 = (neg_below[i] + 0.5 * static_cast<double>(h.negatives[i])) / n;
    const double v01 = (pos_above[i + 1] + 0.5 * static_cast<double>(h.positives[i])) / p;
    s10 += static_cast<double>(h.positives[i]) * (v10 - auc) * (v10 - auc);
    s01 += static_cast<double>(h.negatives[i]) * (v01 - auc) * (v01 - auc);
  }
  const double var = s10 / (p - 1) / p + s01 / (n - 1) / n;
  const double half = Z(level) * std::sqrt(std::max(var, 0.0));
  return {std::max(0.0, auc - half), std::min(1.0, auc + half)};
}

double HistogramAurocErrorBound(const ScoreHistogram& h) {
  const double p = static_cast<double>(h.num_positives()), n = static_cast<double>(h.num_negatives());
  if (p == 0 || n == 0) return kNaN;
  double tied = 0;
  for (size_t i = 0; i < h.positives.size() && i < h.negatives.size(); ++i) {
    tied += static_cast<double>(h.positives[i]) * static_cast<double>(h.negatives[i]);
  }
  return 0.5 * tied / (p * n);
}

Interval HistogramAveragePrecisionRange(const ScoreHistogram& h) {
  const double p = static_cast<double>(h.num_positives());
  if (p == 0) return {kNaN, kNaN};
  // Within a bin the cases are in some unknown order; AP is largest with the
  // positives first, smallest with them last. Each positive adds its
  // precision at its rank (1 / P of it).
  double above = 0, tp = 0, best = 0, worst = 0;
  for (size_t i = h.positives.size(); i-- > 0;) {
    const double pos = static_cast<double>(h.positives[i]), neg = static_cast<double>(h.negatives[i]);
    for (double k = 1; k <= pos; ++k) {
      best += (tp + k) / (above + k);
      worst += (tp + k) / (above + neg + k);
    }
    tp += pos;
    above += pos + neg;
  }
  return {worst / p, best / p};
}

double HistogramAveragePrecision(const ScoreHistogram& h) {
  const double p = static_cast<double>(h.num_positives());
  if (p == 0) return kNaN;
  double tp = 0, fp = 0, ap = 0;
  for (size_t i = h.positives.size(); i-- > 0;) {
    if (h.positives[i] == 0 && h.negatives[i] == 0) continue;
    tp += static_cast<double>(h.positives[i]);
    fp += static_cast<double>(h.negatives[i]);
    ap += static_cast<double>(h.positives[i]) / p * (tp / (tp + fp));
  }
  return ap;
}

double ConfusionCounts::sensitivity() const {
  return tp + fn > 0 ? static_cast<double>(tp) / static_cast<double>(tp + fn) : kNaN;
}
double ConfusionCounts::specificity() const {
  return tn + fp > 0 ? static_cast<double>(tn) / static_cast<double>(tn + fp) : kNaN;
}
double ConfusionCounts::f1() const {
  const double d = static_cast<double>(2 * tp + fp + fn);
  return d > 0 ? 2.0 * static_cast<double>(tp) / d : kNaN;
}
double ConfusionCounts::mcc() const {
  const double a = static_cast<double>(tp), b = static_cast<double>(fp), c = static_cast<double>(fn),
               d = static_cast<double>(tn);
  const double den = std::sqrt((a + b) * (a + c) * (d + b) * (d + c));
  return den > 0 ? (a * d - b * c) / den : 0.0;
}

Interval WilsonInterval(int64_t k, int64_t n, double level) {
  if (n <= 0) return {kNaN, kNaN};
  const double z = Z(level), nn = static_cast<double>(n), ph = static_cast<double>(k) / nn;
  const double den = 1 + z * z / nn;
  const double centre = (ph + z * z / (2 * nn)) / den;
  const double half = z * std::sqrt(ph * (1 - ph) / nn + z * z / (4 * nn * nn)) / den;
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

}  // namespace fedtune::metrics
