#include "common/core/metrics.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <thread>

#include "absl/strings/match.h"
#include "tests/testing/run_command.h"

namespace fedtune {
namespace {

TEST(MetricsRegistry, CountersAndGaugesInTextFormat) {
  MetricsRegistry r;
  r.GetCounter("fedtune_updates_total", "Updates received", {{"outcome", "accepted"}}).Add(3);
  r.GetCounter("fedtune_updates_total", "Updates received", {{"outcome", "refused"}}).Add();
  r.GetGauge("fedtune_sites_connected", "Sites heard from recently").Set(2);
  const std::string text = r.Exposition();
  EXPECT_EQ(text,
            "# HELP fedtune_sites_connected Sites heard from recently\n"
            "# TYPE fedtune_sites_connected gauge\n"
            "fedtune_sites_connected 2\n"
            "# HELP fedtune_updates_total Updates received\n"
            "# TYPE fedtune_updates_total counter\n"
            "fedtune_updates_total{outcome=\"accepted\"} 3\n"
            "fedtune_updates_total{outcome=\"refused\"} 1\n");
}

TEST(MetricsRegistry, SameNameAndLabelsIsTheSameSeriesWhateverTheLabelOrder) {
  MetricsRegistry r;
  Counter& a = r.GetCounter("x_total", "x", {{"b", "2"}, {"a", "1"}});
  Counter& b = r.GetCounter("x_total", "x", {{"a", "1"}, {"b", "2"}});
  EXPECT_EQ(&a, &b);
  a.Add(2);
  EXPECT_TRUE(absl::StrContains(r.Exposition(), "x_total{a=\"1\",b=\"2\"} 2\n"));
}

TEST(MetricsRegistry, CountersNeverGoDown) {
  MetricsRegistry r;
  Counter& c = r.GetCounter("c_total", "c");
  c.Add(5);
  c.Add(-3);
  c.Add(std::numeric_limits<double>::quiet_NaN());
  EXPECT_EQ(c.value(), 5);
}

TEST(MetricsRegistry, MirroredTotalsOnlyMoveUp) {
  MetricsRegistry r;
  Counter& c = r.GetCounter("assoc_total", "associations");
  c.Mirror(7);
  c.Mirror(3);
  EXPECT_EQ(c.value(), 7);
  c.Mirror(9);
  EXPECT_EQ(c.value(), 9);
}

TEST(MetricsRegistry, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry r;
  r.GetGauge("g", "line one\nback\\slash", {{"reason", "say \"no\"\\\n"}}).Set(1);
  const std::string text = r.Exposition();
  EXPECT_TRUE(absl::StrContains(text, "# HELP g line one\\nback\\\\slash\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "g{reason=\"say \\\"no\\\"\\\\\\n\"} 1\n")) << text;
}

TEST(MetricsRegistry, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry r;
  Histogram& h = r.GetHistogram("d_seconds", "durations", {0.5, 1, 2.5});
  for (double v : {0.1, 0.5, 0.7, 2.0, 9.0}) h.Observe(v);
  const std::string text = r.Exposition();
  EXPECT_TRUE(absl::StrContains(text, "# TYPE d_seconds histogram\n"));
  EXPECT_TRUE(absl::StrContains(text, "d_seconds_bucket{le=\"0.5\"} 2\n")) << text;  // le: 0.5 counts
  EXPECT_TRUE(absl::StrContains(text, "d_seconds_bucket{le=\"1\"} 3\n"));
  EXPECT_TRUE(absl::StrContains(text, "d_seconds_bucket{le=\"2.5\"} 4\n"));
  EXPECT_TRUE(absl::StrContains(text, "d_seconds_bucket{le=\"+Inf\"} 5\n"));
  EXPECT_TRUE(absl::StrContains(text, "d_seconds_sum 12.3\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "d_seconds_count 5\n"));
}

TEST(MetricsRegistry, ValuesRoundTripAndSpecialValuesUsePrometheusSpelling) {
  MetricsRegistry r;
  r.GetGauge("a", "a").Set(1234567890123.0);
  r.GetGauge("b", "b").Set(0.1);
  r.GetGauge("c", "c").Set(std::numeric_limits<double>::quiet_NaN());
  r.GetGauge("d", "d").Set(-std::numeric_limits<double>::infinity());
  const std::string text = r.Exposition();
  EXPECT_TRUE(absl::StrContains(text, "\na 1234567890123\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "\nb 0.1\n"));
  EXPECT_TRUE(absl::StrContains(text, "\nc NaN\n"));
  EXPECT_TRUE(absl::StrContains(text, "\nd -Inf\n"));
}

TEST(MetricsRegistry, CollectorsRunBeforeEveryExposition) {
  MetricsRegistry r;
  int calls = 0;
  r.AddCollector([&calls](MetricsRegistry& reg) {
    ++calls;
    reg.GetGauge("jobs", "jobs by state", {{"state", "running"}}).Set(calls);
  });
  EXPECT_TRUE(absl::StrContains(r.Exposition(), "jobs{state=\"running\"} 1\n"));
  EXPECT_TRUE(absl::StrContains(r.Exposition(), "jobs{state=\"running\"} 2\n"));
}

TEST(MetricsRegistry, ConcurrentUpdatesAreAllCounted) {
  MetricsRegistry r;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&r] {
      for (int i = 0; i < 10000; ++i) {
        r.GetCounter("n_total", "n").Add();
        r.GetHistogram("h", "h", {1.0}).Observe(0.5);
      }
    });
  }
  for (auto& t : threads) t.join();
  const std::string text = r.Exposition();
  EXPECT_TRUE(absl::StrContains(text, "n_total 40000\n")) << text;
  EXPECT_TRUE(absl::StrContains(text, "h_count 40000\n"));
}

TEST(MetricsRegistryDeathTest, ANameIsOneType) {
  MetricsRegistry r;
  r.GetCounter("x_total", "x");
  EXPECT_DEATH(r.GetGauge("x_total", "x"), "two different types");
  EXPECT_DEATH(r.GetGauge("bad name", "x"), "invalid metric name");
  EXPECT_DEATH(r.GetGauge("ok", "x", {{"le", "1"}}), "invalid label name");
}

// Prometheus' own checker (Debian's prometheus package) reads the output.
TEST(MetricsRegistry, PromtoolAcceptsTheExposition) {
  std::string out;
  if (testing::RunCommand("promtool --version", &out) != 0) {
    GTEST_SKIP() << "promtool not installed (Debian package prometheus; deploy/install-deps.sh installs it)";
  }
  MetricsRegistry r;
  RegisterProcessMetrics(r, "test");
  r.GetCounter("fedtune_updates_total", "Updates", {{"outcome", "refused"}, {"reason", "a \"quoted\" reason"}})
      .Add(2);
  r.GetHistogram("fedtune_round_duration_seconds", "Round duration", ExponentialBuckets(1, 2, 6)).Observe(3);
  r.GetGauge("fedtune_jobs", "Jobs by state", {{"state", "running"}}).Set(1);
  const auto path = std::filesystem::temp_directory_path() / ("metrics-" + std::to_string(::getpid()) + ".txt");
  std::ofstream(path) << r.Exposition();
  const int rc = testing::RunCommand("promtool check metrics < " + path.string(), &out);
  std::filesystem::remove(path);
  EXPECT_EQ(rc, 0) << out;
}

}  // namespace
}  // namespace fedtune
