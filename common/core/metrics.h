// Prometheus metrics: counters, gauges and histograms kept in memory by the
// daemons and written in the text exposition format (version 0.0.4) for a
// scraper at /metrics. Plain C++ with no network; thread-safe. Nothing that
// names a patient or an image may be a label value: labels are fixed words
// (states, reasons, kinds) chosen by the code.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace fedtune {

using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// Monotonic; resets only when the process restarts (Prometheus' rate()
// handles that).
class Counter {
 public:
  void Add(double v = 1);
  // For a total counted elsewhere (a component's own counters, read at
  // scrape time): takes `total` when it is larger than the current value.
  void Mirror(double total);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Cumulative buckets with the given upper bounds (ascending; +Inf added).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double v);
  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  const std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative), last = +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Bucket bounds start, start*factor, ... (count of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();

  // The metric `name` with these labels, created on first use. A name is
  // one family of one type: asking for it as another type, or with an
  // invalid name, is a programming error and aborts with a message (every
  // registration runs in the tests). References stay valid for the
  // registry's lifetime.
  Counter& GetCounter(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Histogram& GetHistogram(const std::string& name, const std::string& help, const std::vector<double>& bounds,
                          const MetricLabels& labels = {});

  // Runs before every exposition, to set gauges from state kept elsewhere
  // (jobs by state, images in the workspace). Collectors must not call
  // Exposition().
  void AddCollector(std::function<void(MetricsRegistry&)> collect);

  // Every family, sorted by name, in the text exposition format 0.0.4.
  std::string Exposition();

  // The content type Exposition() is served with.
  static constexpr const char* kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family;
  Family& FamilyFor(const std::string& name, const std::string& help, Type type);

  std::mutex mu_;  // families_ and collectors_
  std::map<std::string, std::unique_ptr<Family>> families_;
  std::vector<std::function<void(MetricsRegistry&)>> collectors_;
  std::mutex collect_mu_;  // one exposition at a time runs the collectors
};

// The process-wide metrics both daemons share (start time, build).
void RegisterProcessMetrics(MetricsRegistry& registry, const std::string& component);

}  // namespace fedtune
