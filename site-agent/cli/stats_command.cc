#include <iostream>
#include <nlohmann/json.hpp>

#include "site-agent/cli/commands.h"
#include "site-agent/cli/site_config.h"
#include "site-agent/ingest/site_stats.h"

namespace fedtune::site {

void SetupStats(CLI::App& app, StatsCommand& cmd) {
  auto* sub = app.add_subcommand("stats", "Counts per split and finding, and quarantine reasons, from the workspace");
  sub->footer("Example:\n  fedtune-site stats --config /etc/fedtune/site.toml --shareable --json\n"
              "--shareable suppresses every count below [stats] k (default 5), as sent to the coordinator.");
  sub->add_option("--config", cmd.config, "site.toml")->required()->envname("FEDTUNE_SITE_CONFIG")
      ->check(CLI::ExistingFile);
  sub->add_flag("--shareable", cmd.shareable, "Suppress counts below k");
  sub->add_flag("--json", cmd.json, "Print as JSON");
  sub->callback([&cmd] { throw CLI::RuntimeError(RunStats(cmd)); });
}

int RunStats(const StatsCommand& cmd) {
  auto config = LoadSiteConfig(cmd.config);
  if (!config.ok()) {
    std::cerr << "fedtune-site stats: " << config.status().message() << "\n";
    return 1;
  }
  auto stats = ingest::ReadSiteStats(config->ingest.workspace);
  if (!stats.ok()) {
    std::cerr << "fedtune-site stats: " << stats.status().message() << "\n";
    return 1;
  }
  ingest::SiteStats s = cmd.shareable ? ingest::Shareable(*stats, config->k_threshold) : *stats;
  auto count = [](int64_t v) { return v < 0 ? std::string("<k") : std::to_string(v); };
  if (cmd.json) {
    nlohmann::json j;
    j["site"] = config->site_id;
    j["findings"] = s.findings;
    j["k_threshold"] = cmd.shareable ? config->k_threshold : 0;
    for (const auto& [name, split] : s.splits) {
      j["splits"][name] = {{"images", split.images}, {"patients", split.patients}, {"positives", split.positives}};
    }
    j["quarantined"] = s.quarantined;
    j["quarantine_reasons"] = s.quarantine_reasons;
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << "site " << config->site_id << (cmd.shareable ? " (shareable: counts below k suppressed)" : "") << "\n";
  for (const auto& [name, split] : s.splits) {
    std::cout << "  " << name << ": " << count(split.images) << " images, " << count(split.patients) << " patients\n";
    for (size_t f = 0; f < s.findings.size() && f < split.positives.size(); ++f) {
      std::cout << "    " << s.findings[f] << ": " << count(split.positives[f]) << " positive\n";
    }
  }
  std::cout << "  quarantined: " << count(s.quarantined) << "\n";
  for (const auto& [reason, n] : s.quarantine_reasons) std::cout << "    " << reason << ": " << count(n) << "\n";
  return 0;
}

}  // namespace fedtune::site
