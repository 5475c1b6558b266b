#include "site-agent/runner/disclosure.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/core/file_io.h"
#include "common/metrics/evaluation.h"
#include "site-agent/ingest/site_stats.h"

namespace fedtune::site {
namespace {

bool Small(int64_t v, int k) { return v > 0 && v < k; }

struct Cell {
  size_t begin = 0, end = 0;  // bins [begin, end)
  int64_t pos = 0, neg = 0;
  bool Valid(int k) const { return !Small(pos, k) && !Small(neg, k); }
};

}  // namespace

void CoarsenHistograms(std::vector<int64_t>& positives, std::vector<int64_t>& negatives, int k) {
  const size_t n = std::min(positives.size(), negatives.size());
  std::vector<Cell> cells;
  Cell open;
  for (size_t b = 0; b < n; ++b) {
    if (open.pos + open.neg == 0) open.begin = b;
    if (positives[b] + negatives[b] == 0) continue;
    open.pos += positives[b];
    open.neg += negatives[b];
    open.end = b + 1;  // one past the last non-empty bin
    if (open.pos + open.neg > 0 && open.Valid(k)) {
      cells.push_back(open);
      open = Cell{};
    }
  }
  // What is left (fewer than k of a class) joins the cells before it until
  // the merged cell is valid; all of them together always are when both
  // totals are 0 or >= k.
  if (open.pos + open.neg > 0) {
    while (!cells.empty() && !open.Valid(k)) {
      const Cell prev = cells.back();
      cells.pop_back();
      open.begin = prev.begin;
      open.pos += prev.pos;
      open.neg += prev.neg;
    }
    cells.push_back(open);
  }
  for (size_t b = 0; b < n; ++b) positives[b] = negatives[b] = 0;
  for (const Cell& c : cells) {
    // The middle of the cell's non-empty span stands for the cell.
    const size_t at = c.begin + (c.end - 1 - c.begin) / 2;
    positives[at] = c.pos;
    negatives[at] = c.neg;
  }
}

void ProtectFinding(v1::FindingMetrics* f, int64_t examples, int k) {
  if (k <= 1) return;
  if (f->suppressed()) return;
  const int64_t unlabelled = examples - f->positives() - f->negatives();
  if (Small(f->positives(), k) || Small(f->negatives(), k) || Small(unlabelled, k)) {
    const std::string name = f->finding();
    f->Clear();
    f->set_finding(name);
    f->set_suppressed(true);
    return;
  }
  // Confusion counts, and what is computed from them.
  if (Small(f->tp(), k) || Small(f->fp(), k) || Small(f->tn(), k) || Small(f->fn(), k)) {
    f->set_tp(0);
    f->set_fp(0);
    f->set_tn(0);
    f->set_fn(0);
    f->clear_sensitivity();
    f->clear_specificity();
    f->clear_f1();
    f->clear_mcc();
    f->clear_sensitivity_ci_lower();
    f->clear_sensitivity_ci_upper();
    f->clear_specificity_ci_lower();
    f->clear_specificity_ci_upper();
    f->clear_f1_ci_lower();
    f->clear_f1_ci_upper();
    f->clear_mcc_ci_lower();
    f->clear_mcc_ci_upper();
    f->set_confusion_withheld(true);
  }
  // Histograms, then the ROC points they allow.
  std::vector<int64_t> pos(f->logit_hist_pos().begin(), f->logit_hist_pos().end());
  std::vector<int64_t> neg(f->logit_hist_neg().begin(), f->logit_hist_neg().end());
  f->clear_roc_fpr();
  f->clear_roc_tpr();
  if (pos.empty() || pos.size() != neg.size()) {
    f->clear_logit_hist_pos();
    f->clear_logit_hist_neg();
    return;
  }
  CoarsenHistograms(pos, neg, k);
  f->mutable_logit_hist_pos()->Assign(pos.begin(), pos.end());
  f->mutable_logit_hist_neg()->Assign(neg.begin(), neg.end());
  int64_t total_pos = 0, total_neg = 0;
  for (size_t b = 0; b < pos.size(); ++b) {
    total_pos += pos[b];
    total_neg += neg[b];
  }
  if (total_pos == 0 || total_neg == 0) return;
  // From the highest scores down: one point per cell.
  std::vector<std::pair<float, float>> points = {{0.0f, 0.0f}};
  int64_t tp = 0, fp = 0;
  for (size_t b = pos.size(); b-- > 0;) {
    if (pos[b] + neg[b] == 0) continue;
    tp += pos[b];
    fp += neg[b];
    points.emplace_back(static_cast<float>(static_cast<double>(fp) / total_neg),
                        static_cast<float>(static_cast<double>(tp) / total_pos));
  }
  // Dropping a point merges two steps, each of 0 or >= k cases per class:
  // the merged step is too. Keep the ends, spread the rest evenly.
  std::vector<std::pair<float, float>> kept;
  if (points.size() <= static_cast<size_t>(kSharedRocPoints)) {
    kept = points;
  } else {
    const size_t want = kSharedRocPoints;
    for (size_t i = 0; i < want; ++i) kept.push_back(points[i * (points.size() - 1) / (want - 1)]);
  }
  for (const auto& [x, y] : kept) {
    f->add_roc_fpr(x);
    f->add_roc_tpr(y);
  }
}

void ProtectEvaluation(v1::EvaluationMetrics* m, int k) {
  double sum = 0;
  int shared = 0;
  for (auto& f : *m->mutable_findings()) {
    ProtectFinding(&f, m->examples(), k);
    if (!f.suppressed() && f.has_auroc() && std::isfinite(f.auroc())) {
      sum += f.auroc();
      ++shared;
    }
  }
  if (shared > 0) {
    m->set_macro_auroc(sum / shared);
  } else {
    m->clear_macro_auroc();
  }
}

int64_t HeldCount(int64_t now, int64_t last_sent, int k) {
  if (now < 0 || last_sent < 0) return now;
  return (now > last_sent ? now - last_sent : last_sent - now) < k ? last_sent : now;
}

int64_t ExampleCountToShare(const std::string& workspace, int k, int64_t actual, int64_t cap,
                            int64_t declared_train_images) {
  if (cap > 0 && actual >= cap) return cap;
  const std::string path = (std::filesystem::path(workspace) / "shared_examples").string();
  int64_t last = -1;
  if (auto text = ReadFileBytes(path); text.ok()) {
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &last)) last = -1;
  }
  int64_t n = HeldCount(actual, last, k);
  if (n == actual) {
    if (auto st = WriteFileAtomically(path, absl::StrCat(actual, "\n")); !st.ok()) {
      spdlog::warn("cannot keep the example count sent: {}", std::string(st.message()));
    }
  }
  if (cap > 0) n = std::min(n, cap);
  if (declared_train_images >= 0) n = std::min(n, declared_train_images);
  return n;
}

v1::DatasetSummary StableSummary(const v1::DatasetSummary& fresh, const v1::DatasetSummary& last, int k) {
  v1::DatasetSummary out = fresh;
  auto keep = [k](int64_t now, int64_t before) { return HeldCount(now, before, k); };
  out.set_quarantined(keep(fresh.quarantined(), last.quarantined()));
  for (auto& split : *out.mutable_splits()) {
    const v1::DatasetSummary::SplitCounts* prev = nullptr;
    for (const auto& p : last.splits()) {
      if (p.split() == split.split()) prev = &p;
    }
    if (prev == nullptr) continue;
    split.set_images(keep(split.images(), prev->images()));
    split.set_patients(keep(split.patients(), prev->patients()));
    for (int f = 0; f < out.findings_size(); ++f) {
      int pf = -1;
      for (int j = 0; j < last.findings_size(); ++j) {
        if (last.findings(j) == out.findings(f)) pf = j;
      }
      if (pf < 0) continue;
      if (f < split.positives_size() && pf < prev->positives_size()) {
        split.set_positives(f, keep(split.positives(f), prev->positives(pf)));
      }
      if (f < split.negatives_size() && pf < prev->negatives_size()) {
        split.set_negatives(f, keep(split.negatives(f), prev->negatives(pf)));
      }
    }
  }
  return out;
}

std::vector<bool> SharedFindings(std::span<const float> labels, size_t num_findings, int k) {
  std::vector<bool> shared(num_findings, true);
  if (num_findings == 0) return shared;
  const size_t images = labels.size() / num_findings;
  for (size_t f = 0; f < num_findings; ++f) {
    int64_t pos = 0, neg = 0;
    for (size_t i = 0; i < images; ++i) {
      const float y = labels[i * num_findings + f];
      pos += y == 1.0f ? 1 : 0;
      neg += y == 0.0f ? 1 : 0;
    }
    const int64_t unlabelled = static_cast<int64_t>(images) - pos - neg;
    shared[f] = !Small(pos, k) && !Small(neg, k) && !Small(unlabelled, k);
  }
  return shared;
}

double SharedMacro(std::span<const double> per_finding, const std::vector<bool>& shared) {
  std::vector<double> kept(per_finding.size(), std::nan(""));
  for (size_t f = 0; f < per_finding.size() && f < shared.size(); ++f) {
    if (shared[f]) kept[f] = per_finding[f];
  }
  return metrics::MeanOfDefined(kept);
}

v1::DatasetSummary SummaryToShare(const std::string& workspace, int k, bool keep) {
  v1::DatasetSummary d;
  auto stats = ingest::ReadSiteStats(workspace);
  if (!stats.ok()) return d;
  const ingest::SiteStats s = ingest::Shareable(*stats, k);
  for (const auto& f : s.findings) d.add_findings(f);
  for (const auto& [name, split] : s.splits) {
    auto* sc = d.add_splits();
    sc->set_split(name);
    sc->set_images(split.images);
    sc->set_patients(split.patients);
    for (int64_t p : split.positives) sc->add_positives(p);
    for (int64_t n : split.negatives) sc->add_negatives(n);
  }
  d.set_k_threshold(k);
  d.set_quarantined(s.quarantined);
  // Counts that moved by less than k since the last summary sent keep the
  // value sent then (kept in the workspace, so a restart does not reset it).
  const std::string sent_path = (std::filesystem::path(workspace) / "shared_summary.pb").string();
  if (auto before = ReadFileBytes(sent_path); before.ok()) {
    v1::DatasetSummary last;
    if (last.ParseFromString(*before)) d = StableSummary(d, last, k);
  }
  if (keep) {
    if (auto st = WriteFileAtomically(sent_path, d.SerializeAsString()); !st.ok()) {
      spdlog::warn("cannot keep the dataset summary sent: {}", std::string(st.message()));
    }
  }
  return d;
}

}  // namespace fedtune::site
