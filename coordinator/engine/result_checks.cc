#include "coordinator/engine/result_checks.h"

#include <cmath>
#include <numeric>
#include <set>

#include "absl/strings/str_cat.h"

namespace fedtune::coordinator {
namespace {

constexpr int kMaxHistogramBins = 1 << 14;
constexpr int kMaxRocPoints = 1 << 16;

absl::Status Bad(std::string_view finding, std::string_view what) {
  return absl::InvalidArgumentError(
      finding.empty() ? std::string(what) : absl::StrCat("finding ", CapText(finding, 64), ": ", std::string(what)));
}

bool InRange(double v, double lo, double hi) { return std::isfinite(v) && v >= lo && v <= hi; }

// Images the site declared for `split`: -1 when it did not say, k - 1 when
// the count was withheld below k.
int64_t DeclaredImages(const v1::DatasetSummary& d, std::string_view split) {
  for (const auto& sp : d.splits()) {
    if (sp.split() != split) continue;
    return sp.images() >= 0 ? sp.images() : std::max<int64_t>(0, d.k_threshold() - 1);
  }
  return -1;
}

}  // namespace

std::string CapText(std::string_view text, size_t max_bytes) {
  size_t keep = std::min(text.size(), max_bytes);
  // Do not cut a UTF-8 sequence in half: back up over continuation bytes.
  while (keep > 0 && keep < text.size() && (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80) --keep;
  std::string out(text.substr(0, keep));
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7F) c = ' ';
  }
  if (keep < text.size()) absl::StrAppend(&out, " [", text.size() - keep, " more bytes cut]");
  return out;
}

absl::Status CheckEvaluation(const v1::EvaluationMetrics& m, const JobSpec& spec,
                             const v1::DatasetSummary& declared, std::string_view split) {
  if (m.ByteSizeLong() == 0) return absl::OkStatus();
  if (m.examples() < 0) return Bad("", "examples is negative");
  const int64_t images = DeclaredImages(declared, split);
  if (images >= 0 && m.examples() > images) {
    return Bad("", absl::StrCat(m.examples(), " examples, but the site declared ", images, " ", std::string(split),
                                " images when it joined"));
  }
  if (m.has_macro_auroc() && !InRange(m.macro_auroc(), 0, 1)) return Bad("", "macro AUROC outside [0, 1]");
  const std::set<std::string> job_findings(spec.train.findings().begin(), spec.train.findings().end());
  std::set<std::string> seen;
  for (const v1::FindingMetrics& f : m.findings()) {
    if (job_findings.count(f.finding()) == 0) return Bad(f.finding(), "not one of the job's findings");
    if (!seen.insert(f.finding()).second) return Bad(f.finding(), "reported twice");
    for (int64_t c : {f.positives(), f.negatives(), f.tp(), f.fp(), f.tn(), f.fn()}) {
      if (c < 0) return Bad(f.finding(), "a negative count");
    }
    if (f.positives() + f.negatives() > m.examples()) {
      return Bad(f.finding(), absl::StrCat(f.positives(), " positives + ", f.negatives(), " negatives exceed the ",
                                           m.examples(), " examples"));
    }
    if (f.tp() + f.fp() + f.tn() + f.fn() > 0 &&
        (f.tp() + f.fn() != f.positives() || f.fp() + f.tn() != f.negatives())) {
      return Bad(f.finding(), "the confusion matrix does not add up to the positives and negatives");
    }
    if (f.logit_hist_pos_size() != f.logit_hist_neg_size() || f.logit_hist_pos_size() > kMaxHistogramBins) {
      return Bad(f.finding(), "score histograms of unequal or excessive length");
    }
    if (f.logit_hist_pos_size() > 0) {
      int64_t pos = 0, neg = 0;
      for (int i = 0; i < f.logit_hist_pos_size(); ++i) {
        if (f.logit_hist_pos(i) < 0 || f.logit_hist_neg(i) < 0) return Bad(f.finding(), "a negative histogram cell");
        pos += f.logit_hist_pos(i);
        neg += f.logit_hist_neg(i);
      }
      if (pos != f.positives() || neg != f.negatives()) {
        return Bad(f.finding(), "the score histograms do not add up to the positives and negatives");
      }
    }
    if (f.roc_fpr_size() != f.roc_tpr_size() || f.roc_fpr_size() > kMaxRocPoints) {
      return Bad(f.finding(), "ROC points of unequal or excessive length");
    }
    for (int i = 0; i < f.roc_fpr_size(); ++i) {
      if (!InRange(f.roc_fpr(i), 0, 1) || !InRange(f.roc_tpr(i), 0, 1)) return Bad(f.finding(), "a ROC point outside [0, 1]");
    }
    const std::pair<bool, double> proportions[] = {
        {f.has_auroc(), f.auroc()},
        {f.has_auprc(), f.auprc()},
        {f.has_sensitivity(), f.sensitivity()},
        {f.has_specificity(), f.specificity()},
        {f.has_f1(), f.f1()},
        {f.has_auroc_ci_lower(), f.auroc_ci_lower()},
        {f.has_auroc_ci_upper(), f.auroc_ci_upper()},
        {f.has_sensitivity_ci_lower(), f.sensitivity_ci_lower()},
        {f.has_sensitivity_ci_upper(), f.sensitivity_ci_upper()},
        {f.has_specificity_ci_lower(), f.specificity_ci_lower()},
        {f.has_specificity_ci_upper(), f.specificity_ci_upper()},
    };
    for (const auto& [has, v] : proportions) {
      if (has && !InRange(v, 0, 1)) return Bad(f.finding(), "a proportion (AUROC, AUPRC, sensitivity, ...) outside [0, 1]");
    }
    if (f.has_mcc() && !InRange(f.mcc(), -1, 1)) return Bad(f.finding(), "MCC outside [-1, 1]");
  }
  for (const v1::PairedComparison& p : m.paired()) {
    if (!InRange(p.p_value(), 0, 1) || p.cases() < 0 || p.cases() > m.examples()) {
      return Bad(p.finding(), "a paired comparison with a p-value outside [0, 1] or more cases than examples");
    }
  }
  return absl::OkStatus();
}

}  // namespace fedtune::coordinator
