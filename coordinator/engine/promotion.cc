#include "coordinator/engine/promotion.h"

#include <cmath>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/metrics/pooling.h"

namespace fedtune::coordinator {
namespace {

// The sites' validation measurements of each global version.
std::map<int, std::vector<const v1::EvaluationMetrics*>> ValidationByVersion(const v1::JobStatus& job,
                                                                              int last_version) {
  std::map<int, std::vector<const v1::EvaluationMetrics*>> out;
  for (const auto& r : job.rounds()) {
    for (const auto& s : r.sites()) {
      if (s.state() != "accepted") continue;
      if (!s.model_label().empty() && s.model_label() != "federated") continue;
      if (r.kind() == "train" && s.val_before().examples() > 0) {
        out[r.round() - 1].push_back(&s.val_before());
      } else if (r.kind() == "evaluate" && s.val_after().examples() > 0 && s.val_after().split() == "val") {
        out[last_version].push_back(&s.val_after());
      }
    }
  }
  return out;
}

struct Pooled {
  std::optional<double> macro_auroc;
  std::vector<v1::FindingThreshold> thresholds;
  int withheld = 0;  // findings without a pooled histogram (threshold 0.5)
};

Pooled Pool(const std::vector<const v1::EvaluationMetrics*>& measured, const std::vector<std::string>& findings) {
  Pooled p;
  double sum = 0;
  int defined = 0;
  for (const auto& name : findings) {
    metrics::ScoreHistogram h;
    for (const auto* m : measured) {
      for (const auto& f : m->findings()) {
        if (f.finding() != name || f.suppressed() || f.logit_hist_pos_size() != metrics::kScoreBins ||
            f.logit_hist_neg_size() != metrics::kScoreBins) {
          continue;
        }
        for (int b = 0; b < metrics::kScoreBins; ++b) {
          h.positives[static_cast<size_t>(b)] += f.logit_hist_pos(b);
          h.negatives[static_cast<size_t>(b)] += f.logit_hist_neg(b);
        }
      }
    }
    v1::FindingThreshold t;
    t.set_finding(name);
    const double auroc = metrics::HistogramAuroc(h);
    const double threshold = metrics::HistogramYoudenThreshold(h);
    if (std::isfinite(auroc)) {
      sum += auroc;
      ++defined;
    }
    if (std::isfinite(threshold)) {
      t.set_threshold(threshold);
    } else {
      t.set_threshold(0.5);
      ++p.withheld;
    }
    p.thresholds.push_back(t);
  }
  if (defined > 0) p.macro_auroc = sum / defined;
  return p;
}

}  // namespace

absl::StatusOr<PromotionChoice> ChoosePromotion(const v1::JobStatus& job, const std::vector<std::string>& findings,
                                                int round, bool best) {
  // The versions that exist: the rounds that were aggregated.
  std::map<int, bool> versions;
  for (const auto& r : job.rounds()) {
    if (r.kind() == "train" && r.state() == "aggregated") versions[r.round()] = true;
  }
  if (versions.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job.job_id(), " has no aggregated round yet: there is no global version to promote"));
  }
  const int last = versions.rbegin()->first;
  const auto measured = ValidationByVersion(job, last);
  PromotionChoice c;
  if (best) {
    std::optional<double> top;
    for (const auto& [v, ms] : measured) {
      if (!versions.count(v)) continue;  // version 0 (untrained) is not a candidate
      const Pooled p = Pool(ms, findings);
      if (p.macro_auroc && (!top || *p.macro_auroc >= *top)) {  // ties: the later version
        top = p.macro_auroc;
        c.version = v;
      }
    }
    if (!top) {
      return absl::NotFoundError(absl::StrCat("job ", job.job_id(),
                                              ": no global version has a shared validation AUROC to choose by "
                                              "(promote one with --round N)"));
    }
    c.note = absl::StrFormat("best pooled validation macro AUROC %.4f (round %d of %d)", *top, c.version, last);
  } else if (round > 0) {
    if (!versions.count(round)) {
      return absl::NotFoundError(absl::StrCat("job ", job.job_id(), " round ", round,
                                              " produced no global version (aggregated rounds: 1..", last, ")"));
    }
    c.version = round;
    c.note = absl::StrCat("round ", round, " of ", last);
  } else {
    c.version = last;
    c.note = absl::StrCat("latest version (round ", last, ")");
  }
  auto it = measured.find(c.version);
  const Pooled p = it == measured.end() ? Pool({}, findings) : Pool(it->second, findings);
  c.thresholds = p.thresholds;
  c.val_macro_auroc = p.macro_auroc;
  if (it == measured.end()) {
    absl::StrAppend(&c.note, "; no validation measurement of this version: thresholds 0.5");
  } else if (p.withheld > 0) {
    absl::StrAppend(&c.note, "; ", p.withheld, " finding(s) without shared validation scores: threshold 0.5");
  }
  return c;
}

}  // namespace fedtune::coordinator
