#include "common/metrics/evaluation.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <limits>

#include "absl/strings/str_cat.h"

namespace fedtune::metrics {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

absl::Status CheckShapes(size_t num_findings, std::span<const double> scores, std::span<const float> labels) {
  if (num_findings == 0) return absl::InvalidArgumentError("no findings to evaluate");
  if (scores.size() != labels.size() || scores.size() % num_findings != 0) {
    return absl::InvalidArgumentError(absl::StrCat(scores.size(), " scores and ", labels.size(),
                                                   " labels do not form a [cases x ", num_findings,
                                                   "] table"));
  }
  return absl::OkStatus();
}

// Column `f` of the row-major tables as a BinarySample.
absl::StatusOr<BinarySample> Column(size_t num_findings, size_t f, std::span<const double> scores,
                                    std::span<const float> labels) {
  const size_t cases = scores.size() / num_findings;
  std::vector<double> s(cases);
  std::vector<float> l(cases);
  for (size_t i = 0; i < cases; ++i) {
    s[i] = scores[i * num_findings + f];
    l[i] = labels[i * num_findings + f];
  }
  return MakeSample(s, l);
}

}  // namespace

absl::StatusOr<std::vector<double>> ChooseThresholds(const std::vector<std::string>& findings,
                                                     std::span<const double> scores,
                                                     std::span<const float> labels,
                                                     const EvaluationOptions& options) {
  if (auto st = CheckShapes(findings.size(), scores, labels); !st.ok()) return st;
  std::vector<double> out;
  for (size_t f = 0; f < findings.size(); ++f) {
    auto s = Column(findings.size(), f, scores, labels);
    if (!s.ok()) return s.status();
    double t = options.fixed_threshold;
    if (options.policy == ThresholdPolicy::kYouden) {
      auto y = YoudenThreshold(*s);
      if (y.ok()) t = *y;  // a finding without both classes keeps the fixed threshold
    }
    out.push_back(t);
  }
  return out;
}

absl::StatusOr<EvaluationResult> Evaluate(const std::vector<std::string>& findings,
                                          std::span<const double> scores,
                                          std::span<const float> labels,
                                          const std::vector<double>& thresholds,
                                          const EvaluationOptions& options) {
  if (auto st = CheckShapes(findings.size(), scores, labels); !st.ok()) return st;
  if (thresholds.size() != findings.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(thresholds.size(), " thresholds for ", findings.size(), " findings"));
  }
  EvaluationResult result;
  double sums[6] = {0, 0, 0, 0, 0, 0};
  int evaluable = 0;
  for (size_t f = 0; f < findings.size(); ++f) {
    auto s = Column(findings.size(), f, scores, labels);
    if (!s.ok()) return s.status();
    FindingResult r;
    r.finding = findings[f];
    r.positives = s->positives();
    r.negatives = s->negatives();
    r.threshold = thresholds[f];
    r.evaluable = r.positives > 0 && r.negatives > 0;
    if (!r.evaluable) {
      r.auroc = r.auprc = r.sensitivity = r.specificity = r.f1 = r.mcc = kNaN;
      result.findings.push_back(std::move(r));
      continue;
    }
    r.auroc = *Auroc(*s);
    r.auprc = *AveragePrecision(*s);
    const Confusion c = ConfusionAt(*s, r.threshold);
    r.sensitivity = c.sensitivity();
    r.specificity = c.specificity();
    r.f1 = c.f1();
    r.mcc = c.mcc();
    r.auroc_ci = *DeLongAurocCi(*s, options.level);
    if (options.bootstrap_resamples > 0) {
      const uint64_t seed = options.seed + 7919 * f;
      auto ci = [&](SampleMetric m) {
        return *BootstrapCi(*s, m, r.threshold, options.bootstrap_resamples, seed, options.level);
      };
      r.auprc_ci = ci(AveragePrecisionOf);
      r.sensitivity_ci = ci(SensitivityAt);
      r.specificity_ci = ci(SpecificityAt);
      r.f1_ci = ci(F1At);
      r.mcc_ci = ci(MccAt);
    }
    r.roc = ThinRoc(*RocCurve(*s), options.roc_points);
    const double vals[6] = {r.auroc, r.auprc, r.sensitivity, r.specificity, r.f1, r.mcc};
    for (int k = 0; k < 6; ++k) sums[k] += vals[k];
    ++evaluable;
    result.findings.push_back(std::move(r));
  }
  const double n = evaluable > 0 ? evaluable : kNaN;
  result.macro_auroc = sums[0] / n;
  result.macro_auprc = sums[1] / n;
  result.macro_sensitivity = sums[2] / n;
  result.macro_specificity = sums[3] / n;
  result.macro_f1 = sums[4] / n;
  result.macro_mcc = sums[5] / n;
  return result;
}

std::vector<double> FindingAurocs(size_t num_findings, std::span<const double> scores,
                                  std::span<const float> labels) {
  std::vector<double> out(num_findings, kNaN);
  if (!CheckShapes(num_findings, scores, labels).ok()) return out;
  for (size_t f = 0; f < num_findings; ++f) {
    auto s = Column(num_findings, f, scores, labels);
    if (!s.ok()) continue;
    auto a = Auroc(*s);
    if (a.ok()) out[f] = *a;
  }
  return out;
}

double MeanOfDefined(std::span<const double> values) {
  double sum = 0;
  int n = 0;
  for (double a : values) {
    if (std::isnan(a)) continue;
    sum += a;
    ++n;
  }
  return n > 0 ? sum / n : kNaN;
}

double MacroAuroc(size_t num_findings, std::span<const double> scores, std::span<const float> labels) {
  return MeanOfDefined(FindingAurocs(num_findings, scores, labels));
}

absl::StatusOr<MacroIntervals> BootstrapMacroIntervals(size_t num_findings, std::span<const double> scores,
                                                       std::span<const float> labels,
                                                       const std::vector<double>& thresholds, int resamples,
                                                       uint64_t seed, double level) {
  if (num_findings == 0 || scores.size() != labels.size() || scores.size() % num_findings != 0 ||
      thresholds.size() != num_findings) {
    return absl::InvalidArgumentError(absl::StrCat("macro bootstrap: ", scores.size(), " scores, ", labels.size(),
                                                   " labels and ", thresholds.size(), " thresholds for ",
                                                   num_findings, " findings"));
  }
  MacroIntervals out;
  const size_t n = scores.size() / num_findings;
  if (resamples <= 0 || n == 0) return out;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  std::vector<std::vector<double>> draws(6);
  std::vector<double> s;
  std::vector<float> y;
  int attempts = 0;
  while (static_cast<int>(draws[0].size()) < resamples && attempts++ < 10 * resamples) {
    std::vector<size_t> rows(n);
    for (auto& r : rows) r = pick(rng);
    double sum[6] = {0, 0, 0, 0, 0, 0};
    int evaluable = 0;
    for (size_t f = 0; f < num_findings; ++f) {
      s.clear();
      y.clear();
      for (size_t r : rows) {
        s.push_back(scores[r * num_findings + f]);
        y.push_back(labels[r * num_findings + f]);
      }
      auto sample = MakeSample(s, y);
      if (!sample.ok()) return sample.status();
      if (sample->positives() == 0 || sample->negatives() == 0) continue;
      auto auc = Auroc(*sample);
      auto ap = AveragePrecision(*sample);
      if (!auc.ok() || !ap.ok()) continue;
      const Confusion c = ConfusionAt(*sample, thresholds[f]);
      sum[0] += *auc;
      sum[1] += *ap;
      sum[2] += c.sensitivity();
      sum[3] += c.specificity();
      sum[4] += c.f1();
      sum[5] += c.mcc();
      ++evaluable;
    }
    if (evaluable == 0) continue;
    for (int m = 0; m < 6; ++m) draws[m].push_back(sum[m] / evaluable);
  }
  if (draws[0].empty()) return out;
  auto percentile = [&](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    const double a = (1 - level) / 2;
    auto at = [&](double q) {
      const double pos = q * static_cast<double>(v.size() - 1);
      const size_t lo = static_cast<size_t>(std::floor(pos));
      const size_t hi = std::min(lo + 1, v.size() - 1);
      return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
    };
    return Interval{at(a), at(1 - a)};
  };
  out.auroc = percentile(draws[0]);
  out.auprc = percentile(draws[1]);
  out.sensitivity = percentile(draws[2]);
  out.specificity = percentile(draws[3]);
  out.f1 = percentile(draws[4]);
  out.mcc = percentile(draws[5]);
  return out;
}

}  // namespace fedtune::metrics
