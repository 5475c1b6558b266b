#include <iostream>
#include <nlohmann/json.hpp>

#include "site-agent/cli/commands.h"
#include "site-agent/config/site_config.h"
#include "site-agent/ingest/ingest.h"

namespace fedtune::site {

void SetupLabels(CLI::App& app, LabelsCommand& cmd) {
  auto* labels = app.add_subcommand("labels", "Labels of the images already in the workspace");
  labels->require_subcommand(1);
  auto* sub = labels->add_subcommand(
      "import", "Join a labels CSV to the images already ingested (by the key [labels] names) and record what changed");
  sub->footer(
      "Example:\n  fedtune-site labels import --config /etc/fedtune/site.toml --labels /data/labels-2026-12.csv\n"
      "Labels are kept by finding name, with their history: a job that is running keeps the labels it started with;\n"
      "the next job sees the new ones. A blank (or -1 with [labels] uncertain = \"unknown\") makes a label unknown:\n"
      "it is masked, never counted as a negative. --findings-changed accepts a labels file whose set of findings\n"
      "differs from the workspace's (the workspace then holds the new set).");
  sub->add_option("--config", cmd.config, "site.toml")->required()->envname("FEDTUNE_SITE_CONFIG")
      ->check(CLI::ExistingFile);
  sub->add_option("--labels", cmd.labels, "Labels CSV (layout, key and findings from [labels] in site.toml)")
      ->required()
      ->check(CLI::ExistingFile);
  sub->add_flag("--findings-changed", cmd.findings_changed,
                "Accept a different set of findings than the workspace holds");
  sub->add_flag("--json", cmd.json, "Print the summary as JSON");
  sub->callback([&cmd] { throw CLI::RuntimeError(RunLabelsImport(cmd)); });
}

int RunLabelsImport(const LabelsCommand& cmd) {
  auto config = LoadSiteConfig(cmd.config);
  if (!config.ok()) {
    std::cerr << "fedtune-site labels import: " << config.status().message() << "\n";
    return 1;
  }
  ingest::IngestOptions o = config->ingest;
  if (o.labels.findings.empty()) {
    std::cerr << "fedtune-site labels import: [labels] findings = [...] is needed in " << cmd.config << "\n";
    return 1;
  }
  o.labels_path = cmd.labels;
  o.replace_findings = cmd.findings_changed;
  auto session = ingest::Ingestor::Open(o, [] { std::cerr << "waiting for the ingest running on this workspace\n"; });
  if (!session.ok()) {
    std::cerr << "fedtune-site labels import: " << session.status().message() << "\n";
    return 1;
  }
  auto summary = (*session)->ImportLabels();
  absl::Status committed = summary.ok() ? (*session)->Commit() : summary.status();
  if (!committed.ok()) {
    std::cerr << "fedtune-site labels import: " << committed.message() << "\n";
    return 1;
  }
  const ingest::LabelImportSummary& s = *summary;
  if (cmd.json) {
    std::cout << nlohmann::json{{"rows", s.rows},
                                {"matched", s.matched},
                                {"changed", s.changed},
                                {"unchanged", s.unchanged},
                                {"not_matched", s.not_matched},
                                {"images_without_row", s.images_without_row}}
                     .dump()
              << "\n";
  } else {
    std::cout << s.rows << " rows: " << s.matched << " matched an image (" << s.changed << " changed, " << s.unchanged
              << " unchanged), " << s.not_matched << " matched no image here\n"
              << s.images_without_row << " images of the workspace have no row in this file (their labels stay)\n";
    if (s.not_matched > 0) {
      std::cout << "rows without an image: not ingested yet, quarantined (fedtune-site stats), or another key; "
                   "[labels] key decides what a row's key is matched against\n";
    }
  }
  return 0;
}

void SetupSplit(CLI::App& app, SplitCommand& cmd) {
  auto* sub = app.add_subcommand("split", "Show the workspace's patient split, or re-split every patient on purpose");
  sub->footer(
      "Example:\n  fedtune-site split --config /etc/fedtune/site.toml\n"
      "  fedtune-site split --config /etc/fedtune/site.toml --resplit\n"
      "The split seed and ratios are pinned when the workspace is first ingested, so a patient's new images always\n"
      "join that patient's split; ingest refuses a site.toml whose [split] differs. --resplit assigns every patient\n"
      "again with [split] of site.toml: test results before and after are then not comparable, so run it between\n"
      "jobs, not during one.");
  sub->add_option("--config", cmd.config, "site.toml")->required()->envname("FEDTUNE_SITE_CONFIG")
      ->check(CLI::ExistingFile);
  sub->add_flag("--resplit", cmd.resplit, "Re-split every patient with [split] of site.toml");
  sub->add_flag("--json", cmd.json, "Print as JSON");
  sub->callback([&cmd] { throw CLI::RuntimeError(RunSplit(cmd)); });
}

int RunSplit(const SplitCommand& cmd) {
  auto config = LoadSiteConfig(cmd.config);
  if (!config.ok()) {
    std::cerr << "fedtune-site split: " << config.status().message() << "\n";
    return 1;
  }
  ingest::IngestOptions o = config->ingest;
  o.labels_path.clear();
  o.resplit = cmd.resplit;
  auto session = ingest::Ingestor::Open(o, [] { std::cerr << "waiting for the ingest running on this workspace\n"; });
  if (!session.ok()) {
    std::cerr << "fedtune-site split: " << session.status().message() << "\n";
    return 1;
  }
  if (!cmd.resplit) {
    // Opening the session checked the pin: site.toml agrees with the workspace.
    if (cmd.json) {
      std::cout << nlohmann::json{{"split", "as configured"}, {"seed", o.split_seed}, {"train", o.split.train},
                                  {"val", o.split.val}, {"test", o.split.test}}
                       .dump()
                << "\n";
    } else {
      std::cout << "the workspace is split with seed " << o.split_seed << " and train/val/test " << o.split.train
                << "/" << o.split.val << "/" << o.split.test << ", as site.toml says\n";
    }
    return 0;
  }
  auto moved = (*session)->Resplit();
  absl::Status committed = moved.ok() ? (*session)->Commit() : moved.status();
  if (!committed.ok()) {
    std::cerr << "fedtune-site split: " << committed.message() << "\n";
    return 1;
  }
  if (cmd.json) {
    std::cout << nlohmann::json{{"patients", moved->patients},
                                {"patients_moved", moved->patients_moved},
                                {"images_moved", moved->images_moved}}
                     .dump()
              << "\n";
  } else {
    std::cout << "re-split " << moved->patients << " patients with seed " << o.split_seed << ": "
              << moved->patients_moved << " patients (" << moved->images_moved << " images) changed split\n";
  }
  return 0;
}

}  // namespace fedtune::site
