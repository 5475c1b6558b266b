// HTML and CSV renderings of report.json.
#include <cmath>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "coordinator/report/report.h"

namespace fedtune::report {
namespace {

using nlohmann::json;

const char* const kPalette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};

std::string Esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string Str(const json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

std::string F3(const json& v) { return v.is_number() ? absl::StrFormat("%.3f", v.get<double>()) : "–"; }

// "0.912 (0.851–0.966)" from {"value", "ci"}.
std::string WithCi(const json& m) {
  if (!m.is_object() || !m.contains("value")) return "–";
  std::string s = F3(m["value"]);
  if (m.contains("ci") && m["ci"].is_array()) s += absl::StrFormat(" <span class=ci>(%.3f–%.3f)</span>",
                                                                   m["ci"][0].get<double>(), m["ci"][1].get<double>());
  return s;
}

std::string Count(const json& v) { return v.is_number() ? std::to_string(v.get<int64_t>()) : "&lt;k"; }

// Validation AUROC per round: one colour per site; solid = the incoming global
// model on the site's validation split, dashed = after local training.
std::string ValidationChart(const json& r, const std::vector<std::string>& sites) {
  const json& val = r["validation"];
  int max_round = 1;
  double lo = 0.5;
  for (const auto& v : val) {
    max_round = std::max(max_round, v["round"].get<int>());
    for (const char* k : {"val_before", "val_after"}) {
      if (v[k].is_number() && v[k].get<double>() > 0) lo = std::min(lo, std::floor(v[k].get<double>() * 10) / 10);
    }
  }
  const double W = 640, H = 300, L = 50, R = 20, T = 15, B = 40;
  auto x = [&](double round) { return L + (max_round == 1 ? 0.5 : (round - 1) / (max_round - 1)) * (W - L - R); };
  auto y = [&](double a) { return T + (1 - (a - lo) / (1 - lo)) * (H - T - B); };
  std::string s = absl::StrFormat(
      "<svg class=chart viewBox='0 0 %g %g' width=%g height=%g role=img aria-label='validation AUROC per round'>", W,
      H, W, H);
  for (double a = lo; a <= 1.0001; a += 0.1) {
    absl::StrAppendFormat(&s, "<line x1=%g x2=%g y1=%g y2=%g class=grid /><text x=%g y=%g class=tick>%.1f</text>", L,
                          W - R, y(a), y(a), L - 8, y(a) + 4, a);
  }
  for (int k = 1; k <= max_round; ++k) {
    absl::StrAppendFormat(&s, "<text x=%g y=%g class=tickx>%d</text>", x(k), H - B + 18, k);
  }
  absl::StrAppendFormat(&s, "<text x=%g y=%g class=axis>round</text>", (W + L) / 2, H - 5);
  for (size_t i = 0; i < sites.size(); ++i) {
    const char* colour = kPalette[i % 10];
    for (const char* k : {"val_before", "val_after"}) {
      std::string pts;
      for (const auto& v : val) {
        if (v["site"] != sites[i] || !v[k].is_number() || v[k].get<double>() <= 0) continue;
        absl::StrAppendFormat(&pts, "%.1f,%.1f ", x(v["round"].get<int>()), y(v[k].get<double>()));
      }
      if (pts.empty()) continue;
      absl::StrAppendFormat(&s, "<polyline data-site='%s' points='%s' fill=none stroke='%s' stroke-width=2 %s/>",
                            Esc(sites[i]), pts, colour,
                            std::string(k) == "val_after" ? "stroke-dasharray='5 4' " : "");
    }
  }
  s += "</svg>";
  return s;
}

std::string Legend(const std::vector<std::string>& sites) {
  std::string s = "<div class=legend>";
  for (size_t i = 0; i < sites.size(); ++i) {
    absl::StrAppendFormat(&s, "<button type=button class=site-toggle data-site='%s'><i style='background:%s'></i>%s"
                              "</button>",
                          Esc(sites[i]), kPalette[i % 10], Esc(sites[i]));
  }
  return s + "</div>";
}

std::string RocChart(const std::string& finding, const json& per_site, const std::vector<std::string>& sites) {
  const double S = 240, M = 30;
  std::string s = absl::StrFormat(
      "<figure class=roc><svg viewBox='0 0 %g %g' width=%g height=%g role=img aria-label='ROC %s'>", S + M, S + M,
      S + M, S + M, Esc(finding));
  absl::StrAppendFormat(&s, "<rect x=%g y=0 width=%g height=%g class=frame /><line x1=%g y1=%g x2=%g y2=0 class=diag />",
                        M, S, S, M, S, S + M);
  absl::StrAppendFormat(&s, "<text x=%g y=%g class=axis>1 − specificity</text>", M + S / 2, S + 22);
  absl::StrAppendFormat(&s, "<text x=10 y=%g class=axis transform='rotate(-90 10 %g)'>sensitivity</text>", S / 2,
                        S / 2);
  for (size_t i = 0; i < sites.size(); ++i) {
    if (!per_site.contains(sites[i])) continue;
    const json& f = per_site[sites[i]]["findings"];
    if (!f.contains(finding) || f[finding]["suppressed"].get<bool>() || !f[finding].contains("roc")) continue;
    const auto& fpr = f[finding]["roc"]["fpr"];
    const auto& tpr = f[finding]["roc"]["tpr"];
    std::string pts;
    for (size_t k = 0; k < fpr.size() && k < tpr.size(); ++k) {
      absl::StrAppendFormat(&pts, "%.1f,%.1f ", M + fpr[k].get<double>() * S, S - tpr[k].get<double>() * S);
    }
    absl::StrAppendFormat(&s, "<polyline data-site='%s' points='%s' fill=none stroke='%s' stroke-width=2 />",
                          Esc(sites[i]), pts, kPalette[i % 10]);
  }
  return s + "</svg><figcaption>" + Esc(finding) + "</figcaption></figure>";
}

constexpr char kStyle[] = R"css(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left;white-space:nowrap}td:nth-child(2){white-space:nowrap}th{background:#f5f5f5}
.ci{color:#666;font-size:.85em}.muted{color:#666}.good{color:#1a7f37}.bad{color:#b42318}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}pre{background:#f7f7f7;padding:.8em;overflow:auto}
.chart .grid{stroke:#eee}.tick{font-size:11px;text-anchor:end;fill:#555}.tickx{font-size:11px;text-anchor:middle;fill:#555}
.axis{font-size:11px;text-anchor:middle;fill:#333}.frame{fill:none;stroke:#999}.diag{stroke:#ccc;stroke-dasharray:4 4}
.legend{margin:.4em 0}.site-toggle{border:1px solid #ccc;background:#fff;border-radius:3px;margin:0 .4em .3em 0;padding:.15em .5em;cursor:pointer}
.site-toggle i{display:inline-block;width:.8em;height:.8em;margin-right:.35em;vertical-align:-1px}
.site-toggle.off{opacity:.4}.hidden{display:none}
.rocs{display:flex;flex-wrap:wrap;gap:.5em}.roc{margin:0}.roc figcaption{text-align:center;font-weight:600}
@media print{.site-toggle{border:none}}
)css";

// Clicking a site in a legend hides or shows its lines in every chart.
constexpr char kScript[] = R"js(
document.querySelectorAll('.site-toggle').forEach(function (b) {
  b.addEventListener('click', function () {
    var site = b.getAttribute('data-site');
    var off = !b.classList.contains('off');
    document.querySelectorAll('.site-toggle').forEach(function (o) {
      if (o.getAttribute('data-site') === site) o.classList.toggle('off', off);
    });
    document.querySelectorAll('polyline').forEach(function (p) {
      if (p.getAttribute('data-site') === site) p.classList.toggle('hidden', off);
    });
  });
});
document.documentElement.setAttribute('data-report-ready', '1');
)js";

}  // namespace

std::string RenderHtml(const json& r) {
  const json& job = r["job"];
  const json& prov = r["provenance"];
  std::vector<std::string> findings = prov["findings"].get<std::vector<std::string>>();
  std::set<std::string> site_set;
  for (const auto& s : r["sites"]) site_set.insert(s["site"].get<std::string>());
  for (const auto& v : r["validation"]) site_set.insert(v["site"].get<std::string>());
  const std::vector<std::string> sites(site_set.begin(), site_set.end());

  std::string h = "<!doctype html><html lang=en><head><meta charset=utf-8><title>fedtune report: " +
                  Esc(Str(job, "name")) + "</title><style>" + kStyle + "</style></head><body>";
  absl::StrAppend(&h, "<h1>", Esc(Str(job, "name")), "</h1><p class=muted>job <code>", Esc(Str(job, "id")),
                  "</code> · ", Esc(Str(job, "state")), " · ", job["rounds_done"].get<int>(), " of ",
                  job["rounds_total"].get<int>(), " rounds · submitted ", Esc(Str(job, "submitted")), " · ",
                  sites.size(), " sites: ", Esc(absl::StrJoin(sites, ", ")), "</p>");
  if (!Str(job, "reason").empty()) absl::StrAppend(&h, "<p>", Esc(Str(job, "reason")), "</p>");

  // Headline: federated vs local-only.
  if (r.contains("test") && r["test"].contains("federated")) {
    const json& fed = r["test"]["federated"];
    absl::StrAppend(&h, "<p><b>Federated model, test split:</b> pooled macro AUROC ",
                    F3(fed["pooled"]["macro_auroc"]), ", mean of the sites' macro AUROC ",
                    F3(fed["mean_site_macro_auroc"]));
    if (r.contains("cross_site") && r["cross_site"].contains("mean")) {
      const json& m = r["cross_site"]["mean"];
      absl::StrAppend(&h, "; mean over sites of local-only models on their own test split ", F3(m["local_only"]),
                      " → gain <b class=", m["gain"].get<double>() >= 0 ? "good" : "bad", ">",
                      absl::StrFormat("%+.3f", m["gain"].get<double>()), "</b>");
    }
    h += ".</p>";
  }

  h += "<h2>Provenance</h2><table><tr><th>backbone</th><td>" + Esc(Str(prov["backbone"], "architecture")) +
       "</td></tr><tr><th>base weights SHA-256</th><td><code>" + Esc(Str(prov["backbone"], "sha256")) +
       "</code></td></tr><tr><th>method / strategy</th><td>" + Esc(Str(prov, "method")) + " / " +
       Esc(Str(prov, "strategy")) + "</td></tr><tr><th>findings</th><td>" + Esc(absl::StrJoin(findings, ", ")) +
       "</td></tr></table>";
  h += "<table><tr><th>round</th><th>state</th><th>global version SHA-256</th><th>sites (training examples)</th></tr>";
  for (const auto& v : prov["versions"]) {
    std::string who;
    for (const auto& [site, st] : v["sites"].items()) {
      absl::StrAppend(&who, who.empty() ? "" : ", ", Esc(site), " ",
                      st["state"] == "accepted" ? absl::StrCat("(", st["examples"].get<int64_t>(), ")")
                                                : "<span class=bad>" + Esc(st["state"].get<std::string>()) + "</span>");
    }
    absl::StrAppend(&h, "<tr><td>", v["round"].get<int>(), v["attempt"].get<int>() > 1
                                                                ? absl::StrCat(" (attempt ", v["attempt"].get<int>(), ")")
                                                                : "",
                    "</td><td>", Esc(v["state"].get<std::string>()), "</td><td><code>",
                    v.contains("sha256") ? Esc(v["sha256"].get<std::string>()) : "–", "</code></td><td>", who,
                    "</td></tr>");
  }
  h += "</table><details><summary>job configuration</summary><pre>" + Esc(Str(prov, "job_toml")) + "</pre></details>";

  // Protection: what guarded the updates and the shared counts.
  h += "<h2>Protection</h2><table>";
  if (r.contains("protection")) {
    const json& p = r["protection"];
    const json& dp = p["differential_privacy"];
    h += "<tr><th>differential privacy</th><td>";
    if (dp.is_null()) {
      h += "none: the published model carries no formal guarantee";
    } else {
      absl::StrAppend(&h, Esc(dp["mechanism"].get<std::string>()), ": <b>&epsilon; = ",
                      absl::StrFormat("%.3g", dp["epsilon"].get<double>()), "</b> at &delta; = ",
                      absl::StrFormat("%g", dp["delta"].get<double>()), " after ", dp["rounds"].get<int>(),
                      " rounds: the model versions, for adding or removing one site's data; the sites' metrics "
                      "below are protected by their k, not by the noise (noise multiplier ",
                      absl::StrFormat("%g", dp["noise_multiplier"].get<double>()), ", clip norm ",
                      absl::StrFormat("%g", dp["clip_norm"].get<double>()),
                      dp["adaptive_clipping"].get<bool>() ? " initially, adaptive" : "", ")");
    }
    absl::StrAppend(&h, "</td></tr><tr><th>secure aggregation</th><td>",
                    p["secure_aggregation"].get<bool>()
                        ? absl::StrCat("on (SecAgg+): the coordinator saw only the sum of the sites' masked "
                                       "updates, each value clipped to &plusmn;",
                                       absl::StrFormat("%g", p.value("secure_aggregation_bound", 0.0)))
                        : std::string("off: the coordinator saw each site's update"),
                    "</td></tr>");
  }
  h += "<tr><th>small counts</th><td>each site withholds counts below its k:";
  for (const auto& s : r["sites"]) {
    absl::StrAppend(&h, " ", Esc(s["site"].get<std::string>()), " k = ",
                    s.contains("k_threshold") ? std::to_string(s["k_threshold"].get<int64_t>()) : "?");
  }
  h += "</td></tr></table>";

  h += "<h2>Sites' data</h2><p class=muted>As shared by each site: counts below the site's k are shown as &lt;k.</p>"
       "<table><tr><th>site</th><th>split</th><th>images</th><th>patients</th>";
  for (const auto& f : findings) h += "<th>" + Esc(f) + " +</th>";
  h += "</tr>";
  for (const auto& s : r["sites"]) {
    for (const char* split : {"train", "val", "test"}) {
      if (!s.contains("splits") || !s["splits"].contains(split)) continue;
      const json& c = s["splits"][split];
      absl::StrAppend(&h, "<tr><td>", Esc(s["site"].get<std::string>()), "</td><td>", split, "</td><td>",
                      Count(c["images"]), "</td><td>", Count(c["patients"]), "</td>");
      for (const auto& f : findings) {
        h += "<td>" + (c.contains("positives") && c["positives"].contains(f) ? Count(c["positives"][f]) : "–") +
             "</td>";
      }
      h += "</tr>";
    }
  }
  h += "</table>";

  h += "<h2>Validation AUROC per round</h2><p class=muted>Macro AUROC on each site's validation split: solid — the "
       "global model each round starts from; dashed — the site's model after local training.</p>";
  h += Legend(sites) + ValidationChart(r, sites);

  for (const auto& [model, m] : r["test"].items()) {
    absl::StrAppend(&h, "<h2>Test metrics: ", Esc(model), " model</h2>");
    h += "<table><tr><th>finding</th><th>site</th><th>pos/neg</th><th>AUROC</th><th>AUPRC</th><th>sensitivity</th>"
         "<th>specificity</th><th>F1</th><th>MCC</th></tr>";
    for (const auto& f : findings) {
      for (const auto& site : sites) {
        if (!m["per_site"].contains(site)) continue;
        const json& fs = m["per_site"][site]["findings"];
        if (!fs.contains(f)) continue;
        const json& x = fs[f];
        if (x["suppressed"].get<bool>()) {
          absl::StrAppend(&h, "<tr><td>", Esc(f), "</td><td>", Esc(site),
                          "</td><td colspan=7 class=muted>suppressed: fewer than k cases in a class</td></tr>");
          continue;
        }
        absl::StrAppend(&h, "<tr><td>", Esc(f), "</td><td>", Esc(site), "</td><td>", x["positives"].get<int64_t>(), "/",
                        x["negatives"].get<int64_t>(), "</td><td>", WithCi(x["auroc"]), "</td><td>",
                        WithCi(x["auprc"]), "</td><td>", WithCi(x["sensitivity"]), "</td><td>",
                        WithCi(x["specificity"]), "</td><td>", WithCi(x["f1"]), "</td><td>", WithCi(x["mcc"]),
                        "</td></tr>");
      }
      const json& p = m["pooled"]["findings"][f];
      std::string bound;
      if (p["auroc"].contains("bin_error_bound") && p["auroc"]["bin_error_bound"].is_number()) {
        bound = absl::StrFormat(" <span class=muted>±%.4f</span>", p["auroc"]["bin_error_bound"].get<double>());
      }
      absl::StrAppend(&h, "<tr><td>", Esc(f), "</td><td><b>pooled</b></td><td>", p["positives"].get<int64_t>(), "/",
                      p["negatives"].get<int64_t>(), "</td><td>", WithCi(p["auroc"]), bound, "</td><td>",
                      WithCi(p["auprc"]),
                      "</td><td>", WithCi(p["sensitivity"]), "</td><td>", WithCi(p["specificity"]), "</td><td>",
                      WithCi(p["f1"]), "</td><td>", WithCi(p["mcc"]), "</td></tr>");
    }
    h += "</table><p class=muted>Intervals: 95 %; per site DeLong for AUROC, Wilson for sensitivity and "
         "specificity, bootstrap for the others. Pooled rows combine the sites' score histograms (1024 bins uniform "
         "in logit) and their confusion counts at each site's threshold (Wilson intervals); ± after a pooled AUROC "
         "is how far the exact pooled value can be from it (cases sharing a bin, or a cell a site merged so that "
         "none holds fewer than k cases). Missing figures (–) are undefined or withheld: a class below k, a "
         "confusion count below k (the pooled sensitivity and specificity then leave that site out), or "
         "absent.</p>";
    if (model == "federated") {
      h += "<h3>ROC curves (federated model, test split)</h3>" + Legend(sites) + "<div class=rocs>";
      for (const auto& f : findings) h += RocChart(f, m["per_site"], sites);
      h += "</div>";
    }
  }

  if (r.contains("cross_site")) {
    const json& c = r["cross_site"];
    h += "<h2>Cross-site matrix</h2><p class=muted>Macro test AUROC of each model (rows) on each site's test split "
         "(columns). Local-only models trained on one site alone with the same budget as the federation.</p>"
         "<table><tr><th>model \\ test site</th>";
    for (const auto& s : c["test_sites"]) h += "<th>" + Esc(s.get<std::string>()) + "</th>";
    h += "<th>mean</th></tr>";
    for (const auto& model : c["models"]) {
      h += "<tr><td>" + Esc(model.get<std::string>()) + "</td>";
      for (const auto& v : c["macro_auroc"][model.get<std::string>()]) h += "<td>" + F3(v) + "</td>";
      h += "<td><b>" + F3(c["model_mean"][model.get<std::string>()]) + "</b></td></tr>";
    }
    h += "</table><p>Mean over the matrix: federated " + F3(c["model_mean"]["federated"]) +
         ", local-only models " + F3(c["local_only_all_sites_mean"]) + ".</p>";
    if (c.contains("gain_over_local")) {
      h += "<table><tr><th>site</th><th>federated</th><th>local-only</th><th>gain</th></tr>";
      for (const auto& [site, g] : c["gain_over_local"].items()) {
        const double gain = g["gain"].get<double>();
        absl::StrAppend(&h, "<tr><td>", Esc(site), "</td><td>", F3(g["federated"]), "</td><td>", F3(g["local_only"]),
                        "</td><td class=", gain >= 0 ? "good" : "bad", ">", absl::StrFormat("%+.3f", gain),
                        "</td></tr>");
      }
      if (c.contains("mean")) {
        absl::StrAppend(&h, "<tr><td><b>mean</b></td><td>", F3(c["mean"]["federated"]), "</td><td>",
                        F3(c["mean"]["local_only"]), "</td><td>",
                        absl::StrFormat("%+.3f", c["mean"]["gain"].get<double>()), "</td></tr>");
      }
      h += "</table>";
    }
    if (c.contains("paired_delong") && !c["paired_delong"].empty()) {
      h += "<h3>Federated against local-only, paired on each site's test cases</h3><p class=muted>DeLong's test "
           "for two AUROCs on the same cases, computed at each site; p is two-sided.</p><table><tr><th>site</th>"
           "<th>finding</th><th>local-only model</th><th>federated</th><th>local-only</th><th>difference</th>"
           "<th>p</th></tr>";
      for (const auto& p : c["paired_delong"]) {
        const double d = p["difference"].is_number() ? p["difference"].get<double>() : 0;
        const double pv = p["p_value"].is_number() ? p["p_value"].get<double>() : 1;
        absl::StrAppend(&h, "<tr><td>", Esc(p["site"].get<std::string>()), "</td><td>",
                        Esc(p["finding"].get<std::string>()), "</td><td>", Esc(p["model_b"].get<std::string>()),
                        "</td><td>", F3(p["auroc_a"]), "</td><td>", F3(p["auroc_b"]), "</td><td class=",
                        d >= 0 ? "good" : "bad", ">", absl::StrFormat("%+.3f", d), "</td><td>",
                        pv < 0.001 ? std::string("&lt;0.001") : absl::StrFormat("%.3f", pv), "</td></tr>");
      }
      h += "</table>";
    }
  }
  h += "<p class=muted>Generated by fedtune from aggregate metrics only; no image, label or identifier left any "
       "site.</p><script>";
  h += kScript;
  h += "</script></body></html>\n";
  return h;
}

std::string RenderCsv(const json& r) {
  std::string out = "model,site,finding,metric,value,ci_lower,ci_upper,positives,negatives\n";
  auto quote = [](const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string q = "\"";
    for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
    return q + "\"";
  };
  auto num = [](const json& v) { return v.is_number() ? absl::StrFormat("%.6g", v.get<double>()) : std::string(); };
  auto row = [&](const std::string& model, const std::string& site, const std::string& finding, const json& f) {
    if (f.contains("suppressed") && f["suppressed"].is_boolean() && f["suppressed"].get<bool>()) {
      absl::StrAppend(&out, quote(model), ",", quote(site), ",", quote(finding), ",suppressed,,,,,\n");
      return;
    }
    for (const char* metric : {"auroc", "auprc", "sensitivity", "specificity", "f1", "mcc"}) {
      if (!f.contains(metric)) continue;
      const json& m = f[metric];
      absl::StrAppend(&out, quote(model), ",", quote(site), ",", quote(finding), ",", metric, ",", num(m["value"]),
                      ",", m["ci"].is_array() ? num(m["ci"][0]) : "", ",", m["ci"].is_array() ? num(m["ci"][1]) : "",
                      ",", num(f.value("positives", json())), ",", num(f.value("negatives", json())), "\n");
    }
  };
  for (const auto& [model, m] : r["test"].items()) {
    for (const auto& [site, s] : m["per_site"].items()) {
      absl::StrAppend(&out, quote(model), ",", quote(site), ",macro,auroc,", num(s["macro_auroc"]), ",,,,\n");
      for (const auto& [finding, f] : s["findings"].items()) row(model, site, finding, f);
    }
    absl::StrAppend(&out, quote(model), ",pooled,macro,auroc,", num(m["pooled"]["macro_auroc"]), ",,,,\n");
    for (const auto& [finding, f] : m["pooled"]["findings"].items()) row(model, "pooled", finding, f);
  }
  // Paired tests: model "federated vs local:<site>", metrics the AUROC
  // difference and the two-sided p-value.
  if (r.contains("cross_site") && r["cross_site"].contains("paired_delong")) {
    for (const auto& p : r["cross_site"]["paired_delong"]) {
      const std::string model = p["model_a"].get<std::string>() + " vs " + p["model_b"].get<std::string>();
      const std::string site = p["site"].get<std::string>(), finding = p["finding"].get<std::string>();
      absl::StrAppend(&out, quote(model), ",", quote(site), ",", quote(finding), ",auroc_difference,",
                      num(p["difference"]), ",,,,\n");
      absl::StrAppend(&out, quote(model), ",", quote(site), ",", quote(finding), ",delong_p_value,", num(p["p_value"]),
                      ",,,,\n");
    }
  }
  return out;
}

}  // namespace fedtune::report
