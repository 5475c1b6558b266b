// fedtune-sim: federations in one process, for studies and rehearsals.
// `fedtune simulate` and `fedtune study` run it (the operator's CLI never
// links site code; this program links both sides).
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/core/signals.h"
#include "simulator/simulation.h"
#include "simulator/study.h"

namespace {

using namespace fedtune::sim;

void Say(const std::string& line) { std::cerr << line << std::endl; }

int Fail(const std::string& what, const absl::Status& st) {
  std::cerr << "fedtune " << what << ": " << st.message() << "\n";
  return 1;
}

int RunSimulate(const std::string& config_path, const std::string& report_dir, bool json) {
  auto config = LoadSimulationConfig(config_path);
  if (!config.ok()) return Fail("simulate", config.status());
  if (auto st = PrepareSynthetic(&*config, Say); !st.ok()) return Fail("simulate", st);
  auto result = Simulate(*config, Say);
  if (!result.ok()) return Fail("simulate", result.status());
  const std::string report = report_dir.empty() ? config->work_dir + "/report" : report_dir;
  const bool finished = result->status.state() == fedtune::v1::JOB_STATE_SUCCEEDED;
  absl::Status written = WriteSimulationReport(*config, *result, report);
  if (!written.ok()) std::cerr << "fedtune simulate: report not written: " << written.message() << "\n";
  if (json) {
    std::cout << absl::StrFormat(
        R"({"job_id": "%s", "state": "%s", "rounds_done": %d, "final_weights": "%s", "report": "%s", "seconds": %.3f})",
        result->job_id, finished ? "succeeded" : "failed", result->status.rounds_done(), result->final_weights,
        written.ok() ? report + "/report.html" : "", result->seconds)
              << "\n";
  } else {
    std::cout << "job " << result->job_id << (finished ? " succeeded" : " did not succeed: " + result->status.reason())
              << " after " << result->status.rounds_done() << " rounds in " << absl::StrFormat("%.1f", result->seconds)
              << " s" << (result->resumed ? " (continued from an earlier run)" : "") << "\n"
              << "final global weights: " << result->final_weights << "\n";
    if (written.ok()) std::cout << "report: " << report << "/report.html\n";
  }
  return finished ? 0 : 1;
}

int RunStudyCommand(StudyKind kind, const std::string& config_path) {
  auto config = LoadStudyConfig(config_path, kind);
  if (!config.ok()) return Fail("study", config.status());
  auto outcome = RunStudy(std::move(*config), Say);
  if (!outcome.ok()) return Fail(absl::StrCat("study ", std::string(StudyKindName(kind))), outcome.status());
  std::cout << absl::StrFormat("%d cells: %d run now, %d done before, %d not applicable; %.1f s\n", outcome->cells,
                               outcome->ran, outcome->reused, outcome->skipped, outcome->seconds)
            << "table:   " << outcome->table_md << "\ncsv:     " << outcome->results_csv
            << "\njson:    " << outcome->results_json << "\ncurves:  " << outcome->curves_svg << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedtune simulate / fedtune study: a federation of virtual sites in one process, through the same "
               "round engine, strategies, task executor and model as a real one (no TLS, no daemons)."};
  app.require_subcommand(1);
  app.footer("Examples:\n"
             "  fedtune simulate --config deploy/examples/sim.toml\n"
             "  fedtune study scaling --config deploy/examples/study.toml\n"
             "  fedtune study methods --config study.toml\n"
             "  fedtune study strategies --config study.toml\n"
             "A killed simulation or study continues where it stopped when run again with the same config.");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Also print the engine's and the sites' own log lines");

  std::string sim_config, report_dir;
  bool json = false;
  auto* simulate = app.add_subcommand("simulate", "Run a job over virtual sites in this process");
  simulate->footer(
      "Example:\n  fedtune simulate --config deploy/examples/sim.toml\n"
      "sim.toml names the job (as `fedtune job submit` takes it) and the sites: [[site]] config = \"site.toml\" "
      "for workspaces already ingested, or one [synth] table for a synthetic federation written and ingested "
      "under work_dir. The report of the job is written to work_dir/report.");
  simulate->add_option("--config", sim_config, "sim.toml")->required()->check(CLI::ExistingFile);
  simulate->add_option("--report", report_dir, "Where to write report.html, report.json and metrics.csv "
                                               "(default: WORK_DIR/report)");
  simulate->add_flag("--json", json, "Print the result as JSON");

  std::string study_config;
  auto* study = app.add_subcommand("study", "Run a study: many simulated runs, one table");
  study->require_subcommand(1);
  study->footer("Example:\n  fedtune study scaling --config deploy/examples/study.toml\n"
                "Outputs in the study's work_dir: table.md, results.csv, results.json, curves.svg "
                "(and paired.csv for strategies).");
  struct Kind {
    const char* name;
    StudyKind kind;
    const char* help;
  };
  const Kind kinds[] = {
      {"scaling", StudyKind::kScaling,
       "Data scaling (Table 1): nested training sizes, pooled vs federated vs local-only"},
      {"methods", StudyKind::kMethods, "LoRA, BitFit, linear probe and full fine-tuning, with MCC and PR-AUC"},
      {"strategies", StudyKind::kStrategies,
       "The job spec's aggregation strategies over several seeds, with DeLong's paired tests"},
  };
  StudyKind chosen = StudyKind::kScaling;
  for (const Kind& k : kinds) {
    auto* sub = study->add_subcommand(k.name, k.help);
    sub->footer(absl::StrCat("Example:\n  fedtune study ", k.name, " --config study.toml"));
    sub->add_option("--config", study_config, "study.toml")->required()->check(CLI::ExistingFile);
    sub->callback([&chosen, kind = k.kind] { chosen = kind; });
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int c = app.exit(e);
    return c == 0 ? 0 : 2;
  }
  spdlog::set_level(verbose ? spdlog::level::info : spdlog::level::warn);
  if (simulate->parsed()) return RunSimulate(sim_config, report_dir, json);
  return RunStudyCommand(chosen, study_config);
}
