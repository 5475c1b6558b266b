#include <unistd.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "site-agent/cli/commands.h"
#include "site-agent/config/site_config.h"
#include "site-agent/ingest/ingest.h"

namespace fedtune::site {

void SetupIngest(CLI::App& app, IngestCommand& cmd) {
  auto* sub = app.add_subcommand("ingest", "Filter, de-identify, decode, label and split a folder of DICOM files into "
                                           "the site workspace (re-running skips what is done)");
  sub->footer("Example:\n  fedtune-site ingest --config /etc/fedtune/site.toml --source /data/pacs-export "
              "--labels /data/labels.csv");
  sub->add_option("--config", cmd.config, "site.toml")->required()->envname("FEDTUNE_SITE_CONFIG")
      ->check(CLI::ExistingFile);
  sub->add_option("--source", cmd.source, "Folder to scan recursively")->required()->check(CLI::ExistingDirectory);
  sub->add_option("--labels", cmd.labels,
                  "Labels CSV (layout and key set in [labels] of site.toml); also applied to the images ingested "
                  "before. Without it images are stored unlabelled (fedtune-site labels import labels them later)")
      ->check(CLI::ExistingFile);
  sub->add_flag("--retry-quarantined", cmd.retry_quarantined,
                "Try files quarantined by an earlier run again (after adding their labels or changing a filter)");
  sub->add_flag("--json", cmd.json, "Print the summary as JSON");
  sub->callback([&cmd] { throw CLI::RuntimeError(RunIngest(cmd)); });
}

int RunIngest(const IngestCommand& cmd) {
  auto config = LoadSiteConfig(cmd.config);
  if (!config.ok()) {
    std::cerr << "fedtune-site ingest: " << config.status().message() << "\n";
    return 1;
  }
  ingest::IngestOptions o = config->ingest;
  o.labels_path = cmd.labels;
  o.retry_quarantined = cmd.retry_quarantined;
  if (!cmd.labels.empty() && o.labels.findings.empty()) {
    std::cerr << "fedtune-site ingest: --labels needs [labels] findings = [...] in " << cmd.config << "\n";
    return 1;
  }
  const bool tty = isatty(STDERR_FILENO) && !cmd.json;
  auto summary = ingest::IngestDirectory(cmd.source, o, [tty](int done, int total) {
    if (tty && (done % 16 == 0 || done == total)) std::cerr << "\ringest " << done << "/" << total << std::flush;
  });
  if (tty) std::cerr << "\n";
  if (!summary.ok()) {
    std::cerr << "fedtune-site ingest: " << summary.status().message() << "\n";
    return 1;
  }
  if (summary->unlabelled > 0) {
    // Stored unlabelled, they are masked in training and metrics until labelled.
    std::cerr << "fedtune-site ingest: warning: " << summary->unlabelled
              << " images stored without labels (no --labels); label them with `fedtune-site labels import "
                 "--config "
              << cmd.config << " --labels CSV`\n";
  }
  if (cmd.json) {
    std::cout << nlohmann::json{{"scanned", summary->scanned},
                                {"ingested", summary->ingested},
                                {"already_done", summary->already_done},
                                {"quarantined", summary->quarantined},
                                {"unlabelled", summary->unlabelled},
                                {"redacted", summary->redacted},
                                {"labels_updated", summary->labels_updated},
                                {"quarantine_reasons", summary->quarantine_reasons},
                                {"seconds", summary->seconds}}
                     .dump()
              << "\n";
  } else {
    std::cout << "scanned " << summary->scanned << ", ingested " << summary->ingested << ", already done "
              << summary->already_done << ", quarantined " << summary->quarantined << " in " << summary->seconds
              << " s\n";
    if (summary->redacted > 0) {
      std::cout << "  text found in the pixels and blacked out ([deid] burned_in = \"redact\"): " << summary->redacted
                << " images\n";
    }
    if (summary->labels_updated > 0) {
      std::cout << "  labels changed for " << summary->labels_updated << " images ingested before\n";
    }
    for (const auto& [reason, n] : summary->quarantine_reasons) std::cout << "  quarantine " << reason << ": " << n << "\n";
  }
  return 0;
}

}  // namespace fedtune::site
