#include "common/metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"

namespace fedtune::metrics {
namespace {

absl::Status NeedBothClasses(const BinarySample& s) {
  if (s.positives() == 0 || s.negatives() == 0) {
    return absl::InvalidArgumentError(absl::StrCat("needs both classes, got ", s.positives(),
                                                   " positives and ", s.negatives(), " negatives"));
  }
  return absl::OkStatus();
}

// Midranks (1-based, ties share their mean rank) of `v`.
std::vector<double> Midranks(const std::vector<double>& v) {
  std::vector<size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> ranks(v.size());
  size_t i = 0;
  while (i < order.size()) {
    size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double mid = 0.5 * static_cast<double>(i + j) + 1.0;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = mid;
    i = j + 1;
  }
  return ranks;
}

// Cumulative (fp, tp) counts at each distinct threshold, scores descending.
struct Step {
  double threshold;
  int64_t tp;
  int64_t fp;
};

std::vector<Step> DescendingSteps(const BinarySample& s) {
  std::vector<size_t> order(s.scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return s.scores[a] > s.scores[b]; });
  std::vector<Step> steps;
  int64_t tp = 0, fp = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    (s.labels[order[i]] == 1 ? tp : fp) += 1;
    if (i + 1 == order.size() || s.scores[order[i + 1]] != s.scores[order[i]]) {
      steps.push_back({s.scores[order[i]], tp, fp});
    }
  }
  return steps;
}

double SampleVariance(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return ss / static_cast<double>(v.size() - 1);
}

// Standard normal quantile by bisection on the CDF (exact to double precision,
// and only called once per interval).
double NormalQuantile(double p) {
  double lo = -40, hi = 40;
  for (int i = 0; i < 200; ++i) {
    const double mid = 0.5 * (lo + hi);
    (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

// Linear-interpolated percentile of sorted values (numpy's default method).
double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return std::numeric_limits<double>::quiet_NaN();
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

}  // namespace

int64_t BinarySample::positives() const { return std::count(labels.begin(), labels.end(), 1); }
int64_t BinarySample::negatives() const { return std::count(labels.begin(), labels.end(), 0); }

absl::StatusOr<BinarySample> MakeSample(std::span<const double> scores, std::span<const float> labels) {
  if (scores.size() != labels.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(scores.size(), " scores but ", labels.size(), " labels"));
  }
  BinarySample s;
  for (size_t i = 0; i < scores.size(); ++i) {
    if (labels[i] != 0.0f && labels[i] != 1.0f) continue;
    if (!std::isfinite(scores[i])) {
      return absl::InvalidArgumentError(absl::StrCat("score ", i, " is not finite"));
    }
    s.scores.push_back(scores[i]);
    s.labels.push_back(labels[i] == 1.0f ? 1 : 0);
  }
  return s;
}

absl::StatusOr<double> Auroc(const BinarySample& s) {
  if (auto st = NeedBothClasses(s); !st.ok()) return st;
  const std::vector<double> ranks = Midranks(s.scores);
  double rank_sum = 0;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (s.labels[i] == 1) rank_sum += ranks[i];
  }
  const double p = static_cast<double>(s.positives());
  const double n = static_cast<double>(s.negatives());
  return (rank_sum - p * (p + 1) / 2) / (p * n);
}

absl::StatusOr<double> AveragePrecision(const BinarySample& s) {
  const int64_t positives = s.positives();
  if (positives == 0) return absl::InvalidArgumentError("average precision needs at least one positive");
  double ap = 0, prev_recall = 0;
  for (const Step& st : DescendingSteps(s)) {
    const double recall = static_cast<double>(st.tp) / static_cast<double>(positives);
    const double precision = static_cast<double>(st.tp) / static_cast<double>(st.tp + st.fp);
    ap += (recall - prev_recall) * precision;
    prev_recall = recall;
  }
  return ap;
}

double Confusion::sensitivity() const { return tp + fn == 0 ? 0.0 : static_cast<double>(tp) / static_cast<double>(tp + fn); }
double Confusion::specificity() const { return tn + fp == 0 ? 0.0 : static_cast<double>(tn) / static_cast<double>(tn + fp); }
double Confusion::precision() const { return tp + fp == 0 ? 0.0 : static_cast<double>(tp) / static_cast<double>(tp + fp); }
double Confusion::f1() const {
  const double denom = static_cast<double>(2 * tp + fp + fn);
  return denom == 0 ? 0.0 : 2.0 * static_cast<double>(tp) / denom;
}
double Confusion::mcc() const {
  const double a = static_cast<double>(tp + fp), b = static_cast<double>(tp + fn);
  const double c = static_cast<double>(tn + fp), d = static_cast<double>(tn + fn);
  if (a == 0 || b == 0 || c == 0 || d == 0) return 0.0;
  const double num = static_cast<double>(tp) * static_cast<double>(tn) -
                     static_cast<double>(fp) * static_cast<double>(fn);
  return num / std::sqrt(a * b * c * d);
}

Confusion ConfusionAt(const BinarySample& s, double threshold) {
  Confusion c;
  for (size_t i = 0; i < s.scores.size(); ++i) {
    const bool called = s.scores[i] >= threshold;
    if (s.labels[i] == 1) {
      (called ? c.tp : c.fn) += 1;
    } else {
      (called ? c.fp : c.tn) += 1;
    }
  }
  return c;
}

absl::StatusOr<double> YoudenThreshold(const BinarySample& s) {
  if (auto st = NeedBothClasses(s); !st.ok()) return st;
  const double p = static_cast<double>(s.positives());
  const double n = static_cast<double>(s.negatives());
  double best_j = -std::numeric_limits<double>::infinity();
  double best_t = 0;
  for (const Step& st : DescendingSteps(s)) {
    const double j = static_cast<double>(st.tp) / p - static_cast<double>(st.fp) / n;
    if (j > best_j) {
      best_j = j;
      best_t = st.threshold;
    }
  }
  return best_t;
}

absl::StatusOr<std::vector<RocPoint>> RocCurve(const BinarySample& s) {
  if (auto st = NeedBothClasses(s); !st.ok()) return st;
  const double p = static_cast<double>(s.positives());
  const double n = static_cast<double>(s.negatives());
  std::vector<RocPoint> curve = {{0.0, 0.0, std::numeric_limits<double>::infinity()}};
  for (const Step& st : DescendingSteps(s)) {
    curve.push_back({static_cast<double>(st.fp) / n, static_cast<double>(st.tp) / p, st.threshold});
  }
  return curve;
}

std::vector<RocPoint> ThinRoc(const std::vector<RocPoint>& curve, size_t max_points) {
  if (curve.size() <= max_points || max_points < 2) return curve;
  // Arc length along the curve; keep the first point at or past each target.
  std::vector<double> arc(curve.size(), 0.0);
  for (size_t i = 1; i < curve.size(); ++i) {
    arc[i] = arc[i - 1] + std::hypot(curve[i].fpr - curve[i - 1].fpr, curve[i].tpr - curve[i - 1].tpr);
  }
  std::vector<RocPoint> out = {curve.front()};
  size_t next = 1;
  for (size_t k = 1; k + 1 < max_points; ++k) {
    const double target = arc.back() * static_cast<double>(k) / static_cast<double>(max_points - 1);
    while (next + 1 < curve.size() && arc[next] < target) ++next;
    if (next + 1 < curve.size()) out.push_back(curve[next++]);
  }
  out.push_back(curve.back());
  return out;
}

namespace {

// DeLong's placement values: for each positive, the share of negatives it
// outscores (ties one half), v10; for each negative, the share of positives
// that outscore it, v01. Both in the sample's order within each class.
void PlacementValues(const BinarySample& s, std::vector<double>* v10, std::vector<double>* v01) {
  std::vector<double> x, y;
  for (size_t i = 0; i < s.scores.size(); ++i) (s.labels[i] == 1 ? x : y).push_back(s.scores[i]);
  const size_t m = x.size(), n = y.size();
  std::vector<double> z = x;
  z.insert(z.end(), y.begin(), y.end());
  const std::vector<double> tx = Midranks(x), ty = Midranks(y), tz = Midranks(z);
  v10->resize(m);
  v01->resize(n);
  for (size_t i = 0; i < m; ++i) (*v10)[i] = (tz[i] - tx[i]) / static_cast<double>(n);
  for (size_t j = 0; j < n; ++j) (*v01)[j] = 1.0 - (tz[m + j] - ty[j]) / static_cast<double>(m);
}

double Mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double SampleCovariance(const std::vector<double>& a, const std::vector<double>& b) {
  const double ma = Mean(a), mb = Mean(b);
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - ma) * (b[i] - mb);
  return a.size() > 1 ? s / static_cast<double>(a.size() - 1) : 0.0;
}

}  // namespace

absl::StatusOr<double> DeLongVariance(const BinarySample& s) {
  if (auto st = NeedBothClasses(s); !st.ok()) return st;
  std::vector<double> v10, v01;
  PlacementValues(s, &v10, &v01);
  return SampleVariance(v10) / static_cast<double>(v10.size()) + SampleVariance(v01) / static_cast<double>(v01.size());
}

absl::StatusOr<PairedTest> DeLongPairedTest(const BinarySample& a, const BinarySample& b) {
  if (a.labels != b.labels || a.scores.size() != b.scores.size()) {
    return absl::InvalidArgumentError("a paired test needs both models' scores on the same cases");
  }
  if (auto st = NeedBothClasses(a); !st.ok()) return st;
  std::vector<double> a10, a01, b10, b01;
  PlacementValues(a, &a10, &a01);
  PlacementValues(b, &b10, &b01);
  const double m = static_cast<double>(a10.size()), n = static_cast<double>(a01.size());
  PairedTest t;
  t.auroc_a = Mean(a10);
  t.auroc_b = Mean(b10);
  t.difference = t.auroc_a - t.auroc_b;
  // Var(AUC_a - AUC_b) from the 2 x 2 covariances of the placement values.
  const double var = (SampleCovariance(a10, a10) + SampleCovariance(b10, b10) - 2 * SampleCovariance(a10, b10)) / m +
                     (SampleCovariance(a01, a01) + SampleCovariance(b01, b01) - 2 * SampleCovariance(a01, b01)) / n;
  if (var <= 0) {
    t.z = 0;
    t.p_value = t.difference == 0 ? 1.0 : 0.0;
    return t;
  }
  t.z = t.difference / std::sqrt(var);
  t.p_value = std::erfc(std::abs(t.z) / std::sqrt(2.0));
  return t;
}

absl::StatusOr<Interval> DeLongAurocCi(const BinarySample& s, double level) {
  auto auc = Auroc(s);
  if (!auc.ok()) return auc.status();
  auto var = DeLongVariance(s);
  if (!var.ok()) return var.status();
  const double half = NormalQuantile(0.5 + level / 2) * std::sqrt(*var);
  return Interval{std::max(0.0, *auc - half), std::min(1.0, *auc + half)};
}

absl::StatusOr<Interval> BootstrapCi(const BinarySample& s, SampleMetric metric, double threshold,
                                     int resamples, uint64_t seed, double level) {
  if (auto st = NeedBothClasses(s); !st.ok()) return st;
  if (resamples < 2) return absl::InvalidArgumentError("bootstrap needs at least 2 resamples");
  std::vector<size_t> pos, neg;
  for (size_t i = 0; i < s.labels.size(); ++i) (s.labels[i] == 1 ? pos : neg).push_back(i);
  std::mt19937_64 rng(seed);
  std::vector<double> values;
  values.reserve(static_cast<size_t>(resamples));
  BinarySample r;
  for (int b = 0; b < resamples; ++b) {
    r.scores.clear();
    r.labels.clear();
    for (const auto* group : {&pos, &neg}) {
      std::uniform_int_distribution<size_t> pick(0, group->size() - 1);
      for (size_t k = 0; k < group->size(); ++k) {
        const size_t i = (*group)[pick(rng)];
        r.scores.push_back(s.scores[i]);
        r.labels.push_back(s.labels[i]);
      }
    }
    values.push_back(metric(r, threshold));
  }
  std::sort(values.begin(), values.end());
  const double alpha = (1 - level) / 2;
  return Interval{Percentile(values, alpha), Percentile(values, 1 - alpha)};
}

double SensitivityAt(const BinarySample& s, double t) { return ConfusionAt(s, t).sensitivity(); }
double SpecificityAt(const BinarySample& s, double t) { return ConfusionAt(s, t).specificity(); }
double F1At(const BinarySample& s, double t) { return ConfusionAt(s, t).f1(); }
double MccAt(const BinarySample& s, double t) { return ConfusionAt(s, t).mcc(); }
double AveragePrecisionOf(const BinarySample& s, double) {
  auto ap = AveragePrecision(s);
  return ap.ok() ? *ap : 0.0;
}

}  // namespace fedtune::metrics
