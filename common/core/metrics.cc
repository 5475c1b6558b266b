#include "common/core/metrics.h"

#include "common/core/version.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <variant>

namespace fedtune {
namespace {

[[noreturn]] void Misuse(const std::string& what) {
  std::fprintf(stderr, "fedtune metrics: %s\n", what.c_str());
  std::abort();
}

bool ValidName(const std::string& s, bool allow_colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':') ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Shortest text that reads back as the same double; Prometheus' spellings
// of the special values.
std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, end);
}

// Text format 0.0.4: backslash and newline escaped in HELP text, and also
// the double quote in label values.
std::string Escape(const std::string& s, bool label_value) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && label_value) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

MetricLabels Sorted(const MetricLabels& labels) {
  MetricLabels out = labels;
  std::sort(out.begin(), out.end());
  for (size_t i = 0; i < out.size(); ++i) {
    if (!ValidName(out[i].first, false) || out[i].first.rfind("__", 0) == 0 || out[i].first == "le") {
      Misuse("invalid label name \"" + out[i].first + "\"");
    }
    if (i > 0 && out[i].first == out[i - 1].first) Misuse("label \"" + out[i].first + "\" given twice");
  }
  return out;
}

// {a="x",b="y"} with `extra` (le for buckets) last; "" when there are none.
std::string LabelText(const MetricLabels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    if (!first) out += ",";
    first = false;
    out += k + "=\"" + Escape(v, /*label_value=*/true) + "\"";
  }
  if (!extra.empty()) {
    if (!first) out += ",";
    out += extra;
  }
  return out + "}";
}

}  // namespace

void Counter::Add(double v) {
  if (!(v >= 0)) return;  // a counter never goes down (and NaN is not a count)
  value_.fetch_add(v, std::memory_order_relaxed);
}

void Counter::Mirror(double total) {
  double current = value_.load(std::memory_order_relaxed);
  while (total > current && !value_.compare_exchange_weak(current, total, std::memory_order_relaxed)) {
  }
}

void Gauge::Add(double v) { value_.fetch_add(v, std::memory_order_relaxed); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {
  if (!std::is_sorted(bounds_.begin(), bounds_.end()) ||
      std::adjacent_find(bounds_.begin(), bounds_.end()) != bounds_.end()) {
    Misuse("histogram bounds must be strictly increasing");
  }
}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();  // le: v <= bound
  std::lock_guard lock(mu_);
  ++counts_[i];
  sum_ += v;
  ++count_;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.upper_bounds = bounds_;
  std::lock_guard lock(mu_);
  uint64_t running = 0;
  for (uint64_t c : counts_) {
    running += c;
    s.cumulative.push_back(running);
  }
  s.sum = sum_;
  s.count = count_;
  return s;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> out;
  double b = start;
  for (int i = 0; i < count; ++i, b *= factor) out.push_back(b);
  return out;
}

struct MetricsRegistry::Family {
  std::string name, help;
  Type type;
  std::vector<double> bounds;
  std::map<MetricLabels, std::variant<std::unique_ptr<Counter>, std::unique_ptr<Gauge>, std::unique_ptr<Histogram>>>
      series;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry::Family& MetricsRegistry::FamilyFor(const std::string& name, const std::string& help, Type type) {
  if (!ValidName(name, true)) Misuse("invalid metric name \"" + name + "\"");
  auto& f = families_[name];
  if (f == nullptr) {
    f = std::make_unique<Family>();
    f->name = name;
    f->help = help;
    f->type = type;
  } else if (f->type != type) {
    Misuse("metric \"" + name + "\" asked for as two different types");
  }
  return *f;
}

Counter& MetricsRegistry::GetCounter(const std::string& name, const std::string& help, const MetricLabels& labels) {
  const MetricLabels key = Sorted(labels);
  std::lock_guard lock(mu_);
  auto& slot = FamilyFor(name, help, Type::kCounter).series[key];
  if (!std::holds_alternative<std::unique_ptr<Counter>>(slot) || !std::get<std::unique_ptr<Counter>>(slot)) {
    slot = std::make_unique<Counter>();
  }
  return *std::get<std::unique_ptr<Counter>>(slot);
}

Gauge& MetricsRegistry::GetGauge(const std::string& name, const std::string& help, const MetricLabels& labels) {
  const MetricLabels key = Sorted(labels);
  std::lock_guard lock(mu_);
  auto& slot = FamilyFor(name, help, Type::kGauge).series[key];
  if (!std::holds_alternative<std::unique_ptr<Gauge>>(slot) || !std::get<std::unique_ptr<Gauge>>(slot)) {
    slot = std::make_unique<Gauge>();
  }
  return *std::get<std::unique_ptr<Gauge>>(slot);
}

Histogram& MetricsRegistry::GetHistogram(const std::string& name, const std::string& help,
                                         const std::vector<double>& bounds, const MetricLabels& labels) {
  const MetricLabels key = Sorted(labels);
  std::lock_guard lock(mu_);
  Family& f = FamilyFor(name, help, Type::kHistogram);
  if (f.series.empty()) {
    f.bounds = bounds;
  } else if (f.bounds != bounds) {
    Misuse("histogram \"" + name + "\" asked for with two sets of buckets");
  }
  auto& slot = f.series[key];
  if (!std::holds_alternative<std::unique_ptr<Histogram>>(slot) || !std::get<std::unique_ptr<Histogram>>(slot)) {
    slot = std::make_unique<Histogram>(bounds);
  }
  return *std::get<std::unique_ptr<Histogram>>(slot);
}

void MetricsRegistry::AddCollector(std::function<void(MetricsRegistry&)> collect) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collect));
}

std::string MetricsRegistry::Exposition() {
  std::lock_guard collect_lock(collect_mu_);
  std::vector<std::function<void(MetricsRegistry&)>> collectors;
  {
    std::lock_guard lock(mu_);
    collectors = collectors_;
  }
  for (auto& c : collectors) c(*this);

  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& [name, f] : families_) {
    if (f->series.empty()) continue;
    out += "# HELP " + name + " " + Escape(f->help, /*label_value=*/false) + "\n";
    out += "# TYPE " + name + " " +
           (f->type == Type::kCounter ? "counter" : f->type == Type::kGauge ? "gauge" : "histogram") + "\n";
    for (const auto& [labels, metric] : f->series) {
      if (const auto* c = std::get_if<std::unique_ptr<Counter>>(&metric)) {
        out += name + LabelText(labels) + " " + FormatValue((*c)->value()) + "\n";
      } else if (const auto* g = std::get_if<std::unique_ptr<Gauge>>(&metric)) {
        out += name + LabelText(labels) + " " + FormatValue((*g)->value()) + "\n";
      } else {
        const Histogram::Snapshot s = std::get<std::unique_ptr<Histogram>>(metric)->snapshot();
        for (size_t i = 0; i < s.cumulative.size(); ++i) {
          const std::string le = i < s.upper_bounds.size() ? FormatValue(s.upper_bounds[i]) : "+Inf";
          out += name + "_bucket" + LabelText(labels, "le=\"" + le + "\"") + " " +
                 FormatValue(static_cast<double>(s.cumulative[i])) + "\n";
        }
        out += name + "_sum" + LabelText(labels) + " " + FormatValue(s.sum) + "\n";
        out += name + "_count" + LabelText(labels) + " " + FormatValue(static_cast<double>(s.count)) + "\n";
      }
    }
  }
  return out;
}

void RegisterProcessMetrics(MetricsRegistry& registry, const std::string& component) {
  const double start =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  registry.GetGauge("process_start_time_seconds", "Start time of the process since the Unix epoch, in seconds")
      .Set(std::floor(start));
  registry.GetGauge("fedtune_build_info", "Always 1; the labels say which program and version this is",
                    {{"component", component}, {"version", FedtuneVersion()}})
      .Set(1);
}

}  // namespace fedtune
