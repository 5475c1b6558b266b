#include "simulator/study_output.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/core/file_io.h"
#include "common/core/status.h"
#include "common/metrics/metrics.h"
#include "simulator/study.h"

namespace fedtune::sim {
namespace {

using nlohmann::json;

const char* kMetricNames[] = {"auroc", "auprc", "sensitivity", "specificity", "f1", "mcc"};

double Num(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key) || !j[key].is_number()) return std::nan("");
  return j[key].get<double>();
}

// "0.812 [0.771, 0.853]", or "n/a" where undefined.
std::string Fmt(const json& ci) {
  const double v = Num(ci, "value");
  if (!std::isfinite(v)) return "n/a";
  const double lo = Num(ci, "lower"), hi = Num(ci, "upper");
  if (!std::isfinite(lo) || !std::isfinite(hi) || (lo == 0 && hi == 0)) return absl::StrFormat("%.3f", v);
  return absl::StrFormat("%.3f [%.3f, %.3f]", v, lo, hi);
}

std::string Seconds(const json& j) {
  const double s = Num(j, "seconds_per_epoch");
  if (!std::isfinite(s)) return "(resumed)";
  return s < 60 ? absl::StrFormat("%.2f s", s) : absl::StrFormat("%.1f min", s / 60);
}

std::string ArmLabel(const json& c) {
  const std::string site = c.value("site", "");
  return site.empty() ? c.value("arm", "") : "local:" + site;
}

// The images a model trained on; a local-only model's with the size whose
// share it is.
std::string Images(const json& c) {
  const int64_t size = c.value("size", int64_t{0});
  const std::string images = absl::StrCat(c.value("train_images", int64_t{0}));
  if (!c.value("site", "").empty()) {
    return absl::StrCat(images, " (share of ", size == 0 ? std::string("all") : absl::StrCat(size), ")");
  }
  return absl::StrCat(images, size == 0 ? " (all)" : "");
}

bool Done(const json& c) { return c.value("status", "") == "done"; }

std::string Escape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    switch (ch) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

const char* kColours[] = {"#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6a4c93", "#00798c", "#8a5a44", "#444444"};

std::string CsvField(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char ch : s) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

std::string CsvNumber(double v) { return std::isfinite(v) ? absl::StrFormat("%.6g", v) : std::string(); }

// The strategies' dot chart: each strategy's macro AUROC per seed (dots)
// and their 95% intervals (bars), one row per strategy.
std::string StrategySvg(const std::string& title, const std::vector<std::pair<std::string, std::vector<CurvePoint>>>& rows) {
  const double w = 720, row_h = 34, left = 150, right = 30, top = 50;
  const double h = top + row_h * static_cast<double>(rows.size()) + 50;
  double lo = 1, hi = 0;
  for (const auto& [name, pts] : rows) {
    for (const auto& p : pts) {
      lo = std::min({lo, p.lower, p.y});
      hi = std::max({hi, p.upper, p.y});
    }
  }
  if (!(hi > lo)) {
    lo = 0.4;
    hi = 1;
  }
  lo = std::max(0.0, std::floor(lo * 20) / 20);
  hi = std::min(1.0, std::ceil(hi * 20) / 20);
  if (hi <= lo) hi = lo + 0.05;
  auto X = [&](double v) { return left + (v - lo) / (hi - lo) * (w - left - right); };
  std::ostringstream o;
  o << absl::StrFormat(R"(<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">)",
                       w, h)
    << "\n<title>" << Escape(title) << "</title>\n"
    << absl::StrFormat(R"(<text x="%.0f" y="22" font-size="14" font-weight="bold">%s</text>)", left, Escape(title))
    << "\n";
  for (double t = lo; t <= hi + 1e-9; t += 0.05) {
    o << absl::StrFormat(R"(<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>)", X(t), top - 10, X(t),
                         h - 40)
      << absl::StrFormat(R"(<text x="%.1f" y="%.0f" text-anchor="middle">%.2f</text>)", X(t), h - 24, t) << "\n";
  }
  o << absl::StrFormat(R"(<text x="%.0f" y="%.0f" text-anchor="middle">test macro AUROC (dots: seeds; bars: 95%% intervals)</text>)",
                       (left + w - right) / 2, h - 6)
    << "\n";
  for (size_t r = 0; r < rows.size(); ++r) {
    const double y = top + row_h * (static_cast<double>(r) + 0.5);
    const char* colour = kColours[r % 8];
    o << "<g class=\"series\" data-name=\"" << Escape(rows[r].first) << "\">"
      << absl::StrFormat(R"(<text x="%.0f" y="%.1f" text-anchor="end">%s</text>)", left - 10, y + 4,
                         Escape(rows[r].first));
    const size_t n = rows[r].second.size();
    for (size_t i = 0; i < n; ++i) {
      const CurvePoint& p = rows[r].second[i];
      const double dy = (static_cast<double>(i) - (static_cast<double>(n) - 1) / 2) * 6;
      o << absl::StrFormat(R"(<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>)",
                           X(p.lower), y + dy, X(p.upper), y + dy, colour)
        << absl::StrFormat(R"(<circle cx="%.1f" cy="%.1f" r="4" fill="%s"/>)", X(p.y), y + dy, colour);
    }
    o << "</g>\n";
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace

std::string LearningCurveSvg(const std::string& title,
                             const std::vector<std::pair<std::string, std::vector<CurvePoint>>>& series) {
  const double w = 760, h = 460, left = 70, right = 190, top = 46, bottom = 60;
  double x_lo = 1e300, x_hi = 0, y_lo = 1, y_hi = 0;
  for (const auto& [name, pts] : series) {
    for (const auto& p : pts) {
      x_lo = std::min(x_lo, p.x);
      x_hi = std::max(x_hi, p.x);
      y_lo = std::min({y_lo, p.lower, p.y});
      y_hi = std::max({y_hi, p.upper, p.y});
    }
  }
  if (!(x_hi >= x_lo) || x_lo <= 0) {
    x_lo = 1;
    x_hi = 10;
  }
  const double lx_lo = std::log10(x_lo) - 0.1, lx_hi = std::log10(x_hi) + 0.1;
  if (!(y_hi > y_lo)) {
    y_lo = 0.4;
    y_hi = 1;
  }
  y_lo = std::max(0.0, std::floor(y_lo * 10) / 10);
  y_hi = std::min(1.0, std::ceil(y_hi * 10) / 10);
  if (y_hi <= y_lo) y_hi = y_lo + 0.1;
  auto X = [&](double v) { return left + (std::log10(v) - lx_lo) / (lx_hi - lx_lo) * (w - left - right); };
  auto Y = [&](double v) { return top + (1 - (v - y_lo) / (y_hi - y_lo)) * (h - top - bottom); };
  std::ostringstream o;
  o << absl::StrFormat(R"(<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">)",
                       w, h)
    << "\n<title>" << Escape(title) << "</title>\n"
    << absl::StrFormat(R"(<text x="%.0f" y="24" font-size="14" font-weight="bold">%s</text>)", left, Escape(title))
    << "\n";
  // Axes: y every 0.1 (0.05 when the range is narrow), x at 1-2-5 steps.
  const double y_step = y_hi - y_lo <= 0.3 ? 0.05 : 0.1;
  for (double t = y_lo; t <= y_hi + 1e-9; t += y_step) {
    o << absl::StrFormat(R"(<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>)", left, Y(t), w - right,
                         Y(t))
      << absl::StrFormat(R"(<text x="%.0f" y="%.1f" text-anchor="end">%.2f</text>)", left - 6, Y(t) + 4, t) << "\n";
  }
  for (double decade = std::pow(10, std::floor(lx_lo)); decade <= std::pow(10, std::ceil(lx_hi)); decade *= 10) {
    for (double m : {1.0, 2.0, 5.0}) {
      const double v = decade * m;
      if (std::log10(v) < lx_lo || std::log10(v) > lx_hi) continue;
      o << absl::StrFormat(R"(<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#eee"/>)", X(v), top, X(v),
                           h - bottom)
        << absl::StrFormat(R"(<text x="%.1f" y="%.0f" text-anchor="middle">%g</text>)", X(v), h - bottom + 16, v)
        << "\n";
    }
  }
  o << absl::StrFormat(R"(<text x="%.0f" y="%.0f" text-anchor="middle">training images (log scale)</text>)",
                       (left + w - right) / 2, h - 18)
    << absl::StrFormat(
           R"svg(<text transform="translate(18,%.0f) rotate(-90)" text-anchor="middle">test macro AUROC (95%% band)</text>)svg",
           (top + h - bottom) / 2)
    << "\n";
  for (size_t s = 0; s < series.size(); ++s) {
    const auto& [name, raw] = series[s];
    std::vector<CurvePoint> pts = raw;
    std::sort(pts.begin(), pts.end(), [](const CurvePoint& a, const CurvePoint& b) { return a.x < b.x; });
    const char* colour = kColours[s % 8];
    const bool dashed = name.rfind("local:", 0) == 0;
    o << "<g class=\"series\" data-name=\"" << Escape(name) << "\">";
    std::string band, line;
    for (const auto& p : pts) absl::StrAppendFormat(&band, "%.1f,%.1f ", X(p.x), Y(p.upper));
    for (auto it = pts.rbegin(); it != pts.rend(); ++it) absl::StrAppendFormat(&band, "%.1f,%.1f ", X(it->x), Y(it->lower));
    for (const auto& p : pts) absl::StrAppendFormat(&line, "%.1f,%.1f ", X(p.x), Y(p.y));
    o << absl::StrFormat(R"(<polygon points="%s" fill="%s" fill-opacity="0.12" stroke="none"/>)", band, colour)
      << absl::StrFormat(R"(<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>)", line, colour,
                         dashed ? R"( stroke-dasharray="5,4")" : "");
    for (const auto& p : pts) {
      o << absl::StrFormat(R"(<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s: %g images, %.3f [%.3f, %.3f]</title></circle>)",
                           X(p.x), Y(p.y), colour, Escape(name), p.x, p.y, p.lower, p.upper);
    }
    const double ly = top + 18 * static_cast<double>(s);
    o << absl::StrFormat(R"(<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/>)",
                         w - right + 14, ly, w - right + 38, ly, colour, dashed ? R"( stroke-dasharray="5,4")" : "")
      << absl::StrFormat(R"(<text x="%.0f" y="%.0f">%s</text>)", w - right + 44, ly + 4, Escape(name)) << "</g>\n";
  }
  o << "</svg>\n";
  return o.str();
}

absl::Status WriteStudyOutputs(const StudyDescription& d, const std::vector<json>& cells, const std::string& dir,
                               StudyOutcome* outcome) {
  std::set<std::string> methods, strategies;
  std::set<int64_t> seeds;
  for (const auto& c : cells) {
    methods.insert(c.value("method", ""));
    strategies.insert(c.value("strategy", ""));
    seeds.insert(c.value("seed", int64_t{0}));
  }
  // How a cell is named in tables and charts: what varies in this study.
  auto variant = [&](const json& c) {
    std::vector<std::string> parts;
    if (methods.size() > 1 || d.kind == "methods") parts.push_back(c.value("method", ""));
    if (strategies.size() > 1 || d.kind == "strategies") parts.push_back(c.value("strategy", ""));
    if (d.kind != "strategies") parts.push_back(ArmLabel(c));
    return absl::StrJoin(parts, " / ");
  };

  // --- table.md --------------------------------------------------------------
  std::ostringstream md;
  md << "# " << (d.kind == "scaling" ? "Data-scaling" : d.kind == "methods" ? "Fine-tuning methods" : "Strategies")
     << " study (fedtune study " << d.kind << ")\n\n";
  md << "Federation: " << d.sites.size() << " sites (" << absl::StrJoin(d.sites, ", ") << "); backbone "
     << d.architecture << " at " << d.image_size << " px; " << d.epochs << " epochs per model (federated: "
     << d.epochs / std::max(1, d.local_epochs) << " rounds of " << d.local_epochs
     << " local epoch(s)), the best epoch or round chosen by validation macro AUROC. Every model is tested on the "
     << "same " << d.test_cases << " cases (the sites' test splits pooled); thresholds (Youden) come from the "
     << d.val_cases << " pooled validation cases. 95% intervals: DeLong for each finding's AUROC, Wilson/bootstrap "
     << "for the other metrics, and a bootstrap over cases (" << d.bootstrap_resamples
     << " resamples) for the macro means. Training images are across the federation: each site holds an equal "
     << "share of each size (a nested subset), pooled trains on the union of those shares, local-only on one "
     << "site's share.\n\n";
  md << "## Macro means on the pooled test set\n\n";
  const bool many_seeds = seeds.size() > 1;
  md << "| training images | " << (d.kind == "strategies" ? "strategy" : "model") << (many_seeds ? " | seed" : "")
     << " | AUROC | AUPRC | sensitivity | specificity | F1 | MCC | best epoch | s / epoch |\n";
  md << "|---:|---" << (many_seeds ? "|---:" : "") << "|---|---|---|---|---|---|---:|---:|\n";
  std::vector<std::string> skipped;
  for (const auto& c : cells) {
    if (!Done(c)) {
      skipped.push_back(absl::StrCat(c.value("key", ""), ": ", c.value("reason", "")));
      continue;
    }
    const json& m = c["macro"];
    md << "| " << Images(c) << " | " << variant(c) << (many_seeds ? absl::StrCat(" | ", c.value("seed", 0)) : "")
       << " | " << Fmt(m["auroc"]) << " | " << Fmt(m["auprc"]) << " | " << Fmt(m["sensitivity"]) << " | "
       << Fmt(m["specificity"]) << " | " << Fmt(m["f1"]) << " | " << Fmt(m["mcc"]) << " | "
       << c.value("best_epoch", 0) << " | " << Seconds(c) << " |\n";
  }
  if (d.kind == "scaling") {
    md << "\n### Seconds per epoch against the seed's\n\nThe seed's figures are ViT-B at 518 px on a GPU; "
       << "this run's are pooled (centralised) training on this machine, which is what the seed timed.\n\n"
       << "| training images | this run (pooled) | seed |\n|---:|---:|---:|\n";
    for (const auto& c : cells) {
      if (!Done(c) || c.value("arm", "") != "pooled") continue;
      const int64_t n = c.value("train_images", int64_t{0});
      const std::string seed_ref = c.value("size", int64_t{0}) == 100    ? "26 s"
                                   : c.value("size", int64_t{0}) == 4000 ? "12.1 min"
                                                                         : "";
      md << "| " << n << " | " << Seconds(c) << " | " << seed_ref << " |\n";
    }
    md << "| 100 (seed) | | 26 s |\n| 4000 (seed) | | 12.1 min |\n";
  }
  for (const auto& c : cells) {
    if (!Done(c)) continue;
    md << "\n## " << Images(c) << " training images, " << variant(c)
       << (many_seeds ? absl::StrCat(", seed ", c.value("seed", 0)) : "") << "\n\n"
       << "| finding | positives / negatives | AUROC | AUPRC | sensitivity | specificity | F1 | MCC |\n"
       << "|---|---:|---|---|---|---|---|---|\n";
    for (const auto& f : c["findings"]) {
      md << "| " << f.value("finding", "") << " | " << f.value("positives", 0) << " / " << f.value("negatives", 0);
      if (!f.value("evaluable", false)) {
        md << " | n/a | n/a | n/a | n/a | n/a | n/a |\n";
        continue;
      }
      md << " | " << Fmt(f["auroc"]) << " | " << Fmt(f["auprc"]) << " | " << Fmt(f["sensitivity"]) << " | "
         << Fmt(f["specificity"]) << " | " << Fmt(f["f1"]) << " | " << Fmt(f["mcc"]) << " |\n";
    }
    const json& m = c["macro"];
    md << "| **mean** | | " << Fmt(m["auroc"]) << " | " << Fmt(m["auprc"]) << " | " << Fmt(m["sensitivity"]) << " | "
       << Fmt(m["specificity"]) << " | " << Fmt(m["f1"]) << " | " << Fmt(m["mcc"]) << " |\n";
  }

  // --- paired comparisons (strategies) ----------------------------------------
  std::string paired_csv;
  if (d.kind == "strategies" && !d.strategies.empty()) {
    const std::string& ref = d.strategies.front();
    paired_csv = "size,method,seed,strategy,reference,finding,auroc,auroc_reference,difference,z,p_value\n";
    std::map<std::string, const json*> by_key;
    auto slot = [](const json& c, const std::string& strategy) {
      return absl::StrCat(c.value("size", 0), "|", c.value("method", ""), "|", c.value("seed", 0), "|", strategy);
    };
    for (const auto& c : cells) {
      if (Done(c)) by_key[slot(c, c.value("strategy", ""))] = &c;
    }
    // strategy -> finding -> per seed (difference, p)
    std::map<std::string, std::map<std::string, std::vector<std::pair<double, double>>>> summary;
    const size_t nf = d.findings.size();
    for (const auto& c : cells) {
      if (!Done(c) || c.value("strategy", "") == ref) continue;
      auto it = by_key.find(slot(c, ref));
      if (it == by_key.end()) continue;
      const json& r = *it->second;
      const auto a_scores = c["test_scores"].get<std::vector<double>>();
      const auto b_scores = r["test_scores"].get<std::vector<double>>();
      const auto labels = c["test_labels"].get<std::vector<float>>();
      if (a_scores.size() != b_scores.size() || labels.size() != a_scores.size() || nf == 0) continue;
      for (size_t f = 0; f < nf; ++f) {
        std::vector<double> sa, sb;
        std::vector<float> y;
        for (size_t i = f; i < labels.size(); i += nf) {
          sa.push_back(a_scores[i]);
          sb.push_back(b_scores[i]);
          y.push_back(labels[i]);
        }
        auto ma = metrics::MakeSample(sa, y);
        auto mb = metrics::MakeSample(sb, y);
        if (!ma.ok() || !mb.ok()) continue;
        auto t = metrics::DeLongPairedTest(*ma, *mb);
        if (!t.ok()) continue;
        absl::StrAppend(&paired_csv, c.value("size", 0), ",", CsvField(c.value("method", "")), ",", c.value("seed", 0),
                        ",", CsvField(c.value("strategy", "")), ",", CsvField(ref), ",", CsvField(d.findings[f]), ",",
                        CsvNumber(t->auroc_a), ",", CsvNumber(t->auroc_b), ",", CsvNumber(t->difference), ",",
                        CsvNumber(t->z), ",", CsvNumber(t->p_value), "\n");
        summary[c.value("strategy", "")][d.findings[f]].push_back({t->difference, t->p_value});
      }
    }
    md << "\n## Paired comparisons against " << ref << " (DeLong, same test cases)\n\n"
       << "Per finding: the AUROC difference (strategy minus " << ref << ") averaged over the seeds, and each "
       << "seed's two-sided p-value. p-values are not corrected for the number of comparisons.\n\n"
       << "| strategy | finding | mean ΔAUROC | p per seed | seeds with p < 0.05 |\n|---|---|---:|---|---:|\n";
    for (const auto& [strategy, by_finding] : summary) {
      for (const auto& f : d.findings) {
        auto it = by_finding.find(f);
        if (it == by_finding.end()) continue;
        double mean = 0;
        int significant = 0;
        std::vector<std::string> ps;
        for (const auto& [diff, p] : it->second) {
          mean += diff;
          significant += p < 0.05 ? 1 : 0;
          ps.push_back(absl::StrFormat("%.3g", p));
        }
        mean /= static_cast<double>(it->second.size());
        md << "| " << strategy << " | " << f << " | " << absl::StrFormat("%+.4f", mean) << " | "
           << absl::StrJoin(ps, ", ") << " | " << significant << " of " << it->second.size() << " |\n";
      }
    }
  }
  if (!skipped.empty()) {
    md << "\n## Not applicable\n\n";
    for (const auto& s : skipped) md << "- " << s << "\n";
  }

  // --- results.csv -----------------------------------------------------------
  std::string csv = "study,method,strategy,size,train_images,arm,seed,finding,metric,value,ci_lower,ci_upper\n";
  for (const auto& c : cells) {
    if (!Done(c)) continue;
    const std::string prefix =
        absl::StrCat(d.kind, ",", CsvField(c.value("method", "")), ",", CsvField(c.value("strategy", "")), ",",
                     c.value("size", 0), ",", c.value("train_images", 0), ",", CsvField(ArmLabel(c)), ",",
                     c.value("seed", 0), ",");
    auto rows = [&](const std::string& finding, const json& metrics_of) {
      for (const char* m : kMetricNames) {
        if (!metrics_of.contains(m)) continue;
        const json& v = metrics_of[m];
        absl::StrAppend(&csv, prefix, CsvField(finding), ",", m, ",", CsvNumber(Num(v, "value")), ",",
                        CsvNumber(Num(v, "lower")), ",", CsvNumber(Num(v, "upper")), "\n");
      }
    };
    for (const auto& f : c["findings"]) {
      if (f.value("evaluable", false)) rows(f.value("finding", ""), f);
    }
    rows("macro", c["macro"]);
  }

  // --- results.json ----------------------------------------------------------
  json all{{"study", d.kind},
           {"sites", d.sites},
           {"architecture", d.architecture},
           {"image_size", d.image_size},
           {"epochs", d.epochs},
           {"local_epochs", d.local_epochs},
           {"bootstrap_resamples", d.bootstrap_resamples},
           {"findings", d.findings},
           {"test_cases", d.test_cases},
           {"val_cases", d.val_cases},
           {"seed_seconds_per_epoch", {{"100", kSeedSecondsPerEpochAt100}, {"4000", kSeedSecondsPerEpochAt4000}}}};
  json list = json::array();
  for (const auto& c : cells) {
    json copy = c;
    copy.erase("test_scores");  // in cells/, for paired tests; not needed by readers
    copy.erase("test_labels");
    list.push_back(std::move(copy));
  }
  all["cells"] = std::move(list);

  // --- curves.svg ------------------------------------------------------------
  std::vector<std::pair<std::string, std::vector<CurvePoint>>> series;
  auto add = [&](const std::string& name, CurvePoint p) {
    for (auto& [n, pts] : series) {
      if (n == name) {
        pts.push_back(p);
        return;
      }
    }
    series.push_back({name, {p}});
  };
  for (const auto& c : cells) {
    if (!Done(c)) continue;
    const json& a = c["macro"]["auroc"];
    const double y = Num(a, "value");
    if (!std::isfinite(y)) continue;
    double lo = Num(a, "lower"), hi = Num(a, "upper");
    if (!std::isfinite(lo)) lo = y;
    if (!std::isfinite(hi)) hi = y;
    std::string name = variant(c);
    if (d.kind == "strategies") {
      name = c.value("strategy", "");
    } else if (many_seeds) {
      absl::StrAppend(&name, " (seed ", c.value("seed", 0), ")");
    }
    add(name, {static_cast<double>(c.value("train_images", int64_t{1})), y, lo, hi});
  }
  const std::string svg = d.kind == "strategies"
                              ? StrategySvg("Strategies: test macro AUROC by seed", series)
                              : LearningCurveSvg(d.kind == "scaling" ? "Data scaling: test macro AUROC"
                                                                     : "Fine-tuning methods: test macro AUROC",
                                                 series);

  outcome->table_md = dir + "/table.md";
  outcome->results_csv = dir + "/results.csv";
  outcome->results_json = dir + "/results.json";
  outcome->curves_svg = dir + "/curves.svg";
  RETURN_IF_ERROR(WriteFileAtomically(outcome->table_md, md.str()));
  RETURN_IF_ERROR(WriteFileAtomically(outcome->results_csv, csv));
  RETURN_IF_ERROR(WriteFileAtomically(outcome->results_json, all.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFileAtomically(outcome->curves_svg, svg));
  if (!paired_csv.empty()) RETURN_IF_ERROR(WriteFileAtomically(dir + "/paired.csv", paired_csv));
  return absl::OkStatus();
}

}  // namespace fedtune::sim
