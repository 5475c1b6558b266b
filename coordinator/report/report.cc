#include "coordinator/report/report.h"

#include <cmath>
#include <ctime>
#include <limits>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/metrics/pooling.h"
#include "coordinator/engine/job_spec.h"

namespace fedtune::report {
namespace {

using nlohmann::json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

json Num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

json Metric(double v, double lo, double hi) {
  json m;
  m["value"] = Num(v);
  m["ci"] = std::isfinite(lo) && std::isfinite(hi) ? json::array({lo, hi}) : json(nullptr);
  return m;
}

// An optional proto field as a number: NaN (null in JSON) when absent.
#define FEDTUNE_OPT(msg, field) ((msg).has_##field() ? (msg).field() : kNaN)

// A macro AUROC as shipped: absent when no finding was shared and defined.
double Macro(const v1::EvaluationMetrics& e) { return FEDTUNE_OPT(e, macro_auroc); }

std::string IsoTime(int64_t unix_ms) {
  if (unix_ms <= 0) return "";
  const std::time_t t = unix_ms / 1000;
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&t));
  return buf;
}

json FindingJson(const v1::FindingMetrics& f) {
  json j;
  j["suppressed"] = f.suppressed();
  if (f.suppressed()) return j;
  j["positives"] = f.positives();
  j["negatives"] = f.negatives();
  j["threshold"] = Num(FEDTUNE_OPT(f, threshold));
  j["auroc"] = Metric(FEDTUNE_OPT(f, auroc), FEDTUNE_OPT(f, auroc_ci_lower), FEDTUNE_OPT(f, auroc_ci_upper));
  j["auprc"] = Metric(FEDTUNE_OPT(f, auprc), FEDTUNE_OPT(f, auprc_ci_lower), FEDTUNE_OPT(f, auprc_ci_upper));
  j["sensitivity"] = Metric(FEDTUNE_OPT(f, sensitivity), FEDTUNE_OPT(f, sensitivity_ci_lower),
                            FEDTUNE_OPT(f, sensitivity_ci_upper));
  j["specificity"] = Metric(FEDTUNE_OPT(f, specificity), FEDTUNE_OPT(f, specificity_ci_lower),
                            FEDTUNE_OPT(f, specificity_ci_upper));
  j["f1"] = Metric(FEDTUNE_OPT(f, f1), FEDTUNE_OPT(f, f1_ci_lower), FEDTUNE_OPT(f, f1_ci_upper));
  j["mcc"] = Metric(FEDTUNE_OPT(f, mcc), FEDTUNE_OPT(f, mcc_ci_lower), FEDTUNE_OPT(f, mcc_ci_upper));
  j["roc"] = {{"fpr", std::vector<float>(f.roc_fpr().begin(), f.roc_fpr().end())},
              {"tpr", std::vector<float>(f.roc_tpr().begin(), f.roc_tpr().end())}};
  return j;
}

// Pooled over the sites that shared the finding (not suppressed).
json Pool(const std::vector<std::pair<std::string, const v1::FindingMetrics*>>& per_site) {
  metrics::ScoreHistogram hist;
  metrics::ConfusionCounts cc;
  std::vector<std::string> pooled, left_out, confusion_left_out;
  json why = json::object();
  for (const auto& [site, f] : per_site) {
    if (f->suppressed()) {
      left_out.push_back(site);
      why[site] = "suppressed: fewer than k cases in a class";
      continue;
    }
    if (f->logit_hist_pos_size() != metrics::kScoreBins || f->logit_hist_neg_size() != metrics::kScoreBins) {
      left_out.push_back(site);
      why[site] = "no score histogram (an older site agent, or an undefined metric)";
      continue;
    }
    metrics::ScoreHistogram h;
    h.positives.assign(f->logit_hist_pos().begin(), f->logit_hist_pos().end());
    h.negatives.assign(f->logit_hist_neg().begin(), f->logit_hist_neg().end());
    hist.Merge(h);
    pooled.push_back(site);
    // A site withholds its confusion counts when one is below its k: the
    // pooled sensitivity and specificity then cover the other sites.
    if (f->confusion_withheld()) {
      confusion_left_out.push_back(site);
      continue;
    }
    cc.tp += f->tp();
    cc.fp += f->fp();
    cc.tn += f->tn();
    cc.fn += f->fn();
  }
  json j;
  j["sites"] = pooled;
  j["sites_left_out"] = left_out;
  j["sites_left_out_why"] = why;
  j["positives"] = hist.num_positives();
  j["negatives"] = hist.num_negatives();
  const metrics::Interval auc_ci = metrics::HistogramAurocCi(hist);
  j["auroc"] = Metric(metrics::HistogramAuroc(hist), auc_ci.lower, auc_ci.upper);
  j["auprc"] = Metric(metrics::HistogramAveragePrecision(hist), kNaN, kNaN);
  // What pooling from histograms can get wrong, stated with the figures: the
  // exact pooled AUROC is within this of the value above, and the exact
  // average precision within the range.
  j["auroc"]["bin_error_bound"] = Num(metrics::HistogramAurocErrorBound(hist));
  const metrics::Interval ap_range = metrics::HistogramAveragePrecisionRange(hist);
  j["auprc"]["exact_range"] =
      std::isfinite(ap_range.lower) ? json::array({ap_range.lower, ap_range.upper}) : json(nullptr);
  const auto sens_ci = metrics::WilsonInterval(cc.tp, cc.tp + cc.fn);
  const auto spec_ci = metrics::WilsonInterval(cc.tn, cc.tn + cc.fp);
  j["sensitivity"] = Metric(cc.sensitivity(), sens_ci.lower, sens_ci.upper);
  j["specificity"] = Metric(cc.specificity(), spec_ci.lower, spec_ci.upper);
  j["f1"] = Metric(cc.f1(), kNaN, kNaN);
  j["mcc"] = Metric(pooled.size() == confusion_left_out.size() ? kNaN : cc.mcc(), kNaN, kNaN);
  j["confusion"] = {{"tp", cc.tp}, {"fp", cc.fp}, {"tn", cc.tn}, {"fn", cc.fn}};
  j["confusion_sites_left_out"] = confusion_left_out;
  return j;
}

}  // namespace

std::string JobStateName(v1::JobState state) {
  std::string n = v1::JobState_Name(state);
  if (n.rfind("JOB_STATE_", 0) == 0) n = n.substr(std::string("JOB_STATE_").size());
  for (auto& c : n) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return n;
}

absl::StatusOr<json> BuildReport(const v1::JobStatus& job, const std::vector<v1::SiteInfo>& sites) {
  auto spec = coordinator::ParseJobSpec(job.job_toml(), job.job_id());
  if (!spec.ok()) return spec.status();
  json r;
  r["format"] = "fedtune-report/1";
  r["job"] = {{"id", job.job_id()},           {"name", job.name()},
              {"state", JobStateName(job.state())}, {"reason", job.reason()},
              {"submitted", IsoTime(job.created_unix_ms())}, {"updated", IsoTime(job.updated_unix_ms())},
              {"rounds_total", job.rounds_total()}, {"rounds_done", job.rounds_done()}};
  std::vector<std::string> findings(spec->train.findings().begin(), spec->train.findings().end());
  json prov;
  prov["backbone"] = {{"architecture", spec->backbone_architecture}, {"sha256", spec->backbone_sha256}};
  prov["method"] = spec->train.method();
  prov["strategy"] = spec->strategy.name;
  prov["findings"] = findings;
  prov["job_toml"] = job.job_toml();
  prov["versions"] = json::array();
  json validation = json::array();
  std::set<std::string> participants;
  for (const auto& round : job.rounds()) {
    if (round.kind() != "train") continue;
    json v;
    v["round"] = round.round();
    v["attempt"] = round.attempt();
    v["state"] = round.state();
    v["sites"] = json::object();
    for (const auto& s : round.sites()) {
      v["sites"][s.site_id()] = {{"state", s.state()}, {"examples", s.num_examples()}};
      if (s.state() != "accepted") continue;
      participants.insert(s.site_id());
      validation.push_back({{"round", round.round()},
                            {"site", s.site_id()},
                            {"val_before", Num(Macro(s.val_before()))},
                            {"val_after", Num(Macro(s.val_after()))},
                            {"train_loss", Num(s.train_loss())},
                            {"examples", s.num_examples()}});
    }
    if (round.has_global()) {
      v["version"] = round.global().version();
      v["sha256"] = round.global().sha256();
      v["size_bytes"] = round.global().size_bytes();
    }
    prov["versions"].push_back(v);
  }
  r["provenance"] = prov;
  r["validation"] = validation;
  // How what the sites shared was protected: differential privacy (the
  // budget spent by the rounds that were aggregated), secure aggregation and
  // each site's k (below, with the sites).
  {
    json p;
    const v1::PrivacyBudget& b = job.privacy();
    if (b.mechanism().empty()) {
      p["differential_privacy"] = nullptr;
    } else {
      p["differential_privacy"] = {{"mechanism", b.mechanism()},
                                   {"noise_multiplier", b.noise_multiplier()},
                                   {"clip_norm", b.clip_norm()},
                                   {"adaptive_clipping", b.adaptive_clipping()},
                                   {"delta", b.delta()},
                                   {"rounds", b.rounds_accounted()},
                                   {"epsilon", b.epsilon_spent()},
                                   {"max_epsilon", b.max_epsilon()}};
    }
    p["secure_aggregation"] = job.secure_aggregation_bound() > 0;
    if (job.secure_aggregation_bound() > 0) p["secure_aggregation_bound"] = job.secure_aggregation_bound();
    r["protection"] = p;
  }

  json site_summaries = json::array();
  for (const auto& si : sites) {
    if (!participants.count(si.site_id())) continue;
    json s;
    s["site"] = si.site_id();
    s["k_threshold"] = si.dataset().k_threshold();
    s["quarantined"] = si.dataset().quarantined() < 0 ? json(nullptr) : json(si.dataset().quarantined());
    for (const auto& sp : si.dataset().splits()) {
      json c;
      c["images"] = sp.images() < 0 ? json(nullptr) : json(sp.images());
      c["patients"] = sp.patients() < 0 ? json(nullptr) : json(sp.patients());
      for (int i = 0; i < sp.positives_size() && i < si.dataset().findings_size(); ++i) {
        c["positives"][si.dataset().findings(i)] = sp.positives(i) < 0 ? json(nullptr) : json(sp.positives(i));
      }
      s["splits"][sp.split()] = c;
    }
    site_summaries.push_back(s);
  }
  r["sites"] = site_summaries;

  // Final evaluation: model label -> site -> metrics.
  std::map<std::string, std::map<std::string, const v1::EvaluationMetrics*>> evals;
  for (const auto& round : job.rounds()) {
    if (round.kind() != "evaluate") continue;
    for (const auto& s : round.sites()) {
      if (s.state() != "accepted") continue;
      const std::string model = s.model_label().empty() ? "federated" : s.model_label();
      evals[model][s.site_id()] = &s.evaluation();
    }
  }
  json test = json::object();
  for (const auto& [model, per_site] : evals) {
    json m;
    for (const auto& [site, e] : per_site) {
      json sj;
      sj["examples"] = e->examples();
      sj["macro_auroc"] = Num(Macro(*e));
      for (const auto& f : e->findings()) sj["findings"][f.finding()] = FindingJson(f);
      m["per_site"][site] = sj;
    }
    // Pooled macro: over the findings the pooled AUROC is defined for.
    double macro = 0;
    int counted = 0;
    for (const auto& finding : findings) {
      std::vector<std::pair<std::string, const v1::FindingMetrics*>> fs;
      for (const auto& [site, e] : per_site) {
        for (const auto& f : e->findings()) {
          if (f.finding() == finding) fs.emplace_back(site, &f);
        }
      }
      json pooled = Pool(fs);
      if (pooled["auroc"]["value"].is_number()) {
        macro += pooled["auroc"]["value"].get<double>();
        ++counted;
      }
      m["pooled"]["findings"][finding] = pooled;
    }
    m["pooled"]["macro_auroc"] = counted > 0 ? json(macro / counted) : json(nullptr);
    // Mean over the sites that shared a macro AUROC (one whose findings were
    // all suppressed has none: it is left out, not counted as 0).
    double mean = 0;
    int n = 0;
    for (const auto& [site, e] : per_site) {
      if (std::isfinite(Macro(*e))) {
        mean += Macro(*e);
        ++n;
      }
    }
    m["mean_site_macro_auroc_sites"] = n;
    m["mean_site_macro_auroc"] = n > 0 ? json(mean / n) : json(nullptr);
    test[model] = m;
  }
  r["test"] = test;

  // Cross-site matrix and the federated model's gain over local-only models.
  if (evals.size() > 1 && evals.count("federated")) {
    json cross;
    std::vector<std::string> models, test_sites;
    for (const auto& [model, per_site] : evals) models.push_back(model);
    std::set<std::string> ts;
    for (const auto& [model, per_site] : evals)
      for (const auto& [site, e] : per_site) ts.insert(site);
    test_sites.assign(ts.begin(), ts.end());
    cross["models"] = models;
    cross["test_sites"] = test_sites;
    double local_sum = 0;
    int local_n = 0;
    for (const auto& model : models) {
      json row = json::array();
      double sum = 0;
      int n = 0;
      for (const auto& site : test_sites) {
        auto it = evals[model].find(site);
        row.push_back(it == evals[model].end() ? json(nullptr) : Num(Macro(*it->second)));
        if (it != evals[model].end() && std::isfinite(Macro(*it->second))) {
          sum += Macro(*it->second);
          ++n;
        }
      }
      cross["macro_auroc"][model] = row;
      cross["model_mean"][model] = n > 0 ? json(sum / n) : json(nullptr);
      if (model != "federated") {
        local_sum += sum;
        local_n += n;
      }
    }
    // Every local-only model on every test site (its own and the others').
    cross["local_only_all_sites_mean"] = local_n > 0 ? json(local_sum / local_n) : json(nullptr);
    double gain_sum = 0, fed_sum = 0, own_sum = 0;
    int gains = 0;
    for (const auto& site : test_sites) {
      auto fed = evals["federated"].find(site);
      auto local_model = evals.find("local:" + site);
      if (fed == evals["federated"].end() || local_model == evals.end()) continue;
      auto own = local_model->second.find(site);
      if (own == local_model->second.end()) continue;
      const double fed_macro = Macro(*fed->second), own_macro = Macro(*own->second);
      if (!std::isfinite(fed_macro) || !std::isfinite(own_macro)) continue;  // nothing shared to compare
      const double g = fed_macro - own_macro;
      cross["gain_over_local"][site] = {{"federated", fed_macro}, {"local_only", own_macro}, {"gain", g}};
      gain_sum += g;
      fed_sum += fed_macro;
      own_sum += own_macro;
      ++gains;
    }
    if (gains > 0) {
      cross["mean"] = {{"federated", fed_sum / gains}, {"local_only", own_sum / gains}, {"gain", gain_sum / gains}};
    }
    // Paired DeLong tests computed at each site: the federated model against
    // each local-only model on that site's test cases.
    json paired = json::array();
    for (const auto& [model, per_site] : evals) {
      for (const auto& [site, e] : per_site) {
        for (const auto& p : e->paired()) {
          paired.push_back({{"site", site},
                            {"finding", p.finding()},
                            {"model_a", p.model_a()},
                            {"model_b", p.model_b()},
                            {"auroc_a", Num(p.auroc_a())},
                            {"auroc_b", Num(p.auroc_b())},
                            {"difference", Num(p.difference())},
                            {"p_value", Num(p.p_value())},
                            {"cases", p.cases()}});
        }
      }
    }
    cross["paired_delong"] = paired;
    r["cross_site"] = cross;
  }
  return r;
}

}  // namespace fedtune::report
