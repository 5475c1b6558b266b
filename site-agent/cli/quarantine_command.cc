// `fedtune-site quarantine list | purge`: the raw files the DICOM receiver
// kept after ingest quarantined them ([scp] keep_quarantined).
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "site-agent/cli/commands.h"
#include "site-agent/config/site_config.h"
#include "site-agent/dicom_scp/kept_quarantine.h"

namespace fedtune::site {

void SetupQuarantine(CLI::App& app, QuarantineCommand& cmd) {
  auto* q = app.add_subcommand("quarantine", "Raw received files kept after ingest quarantined them ([scp] "
                                             "keep_quarantined): list them with the reason, or delete them");
  q->require_subcommand(1);
  q->footer(
      "Examples:\n  fedtune-site quarantine list --config /etc/fedtune/site.toml\n"
      "  fedtune-site quarantine purge --config /etc/fedtune/site.toml              # all of them\n"
      "  fedtune-site quarantine purge --config /etc/fedtune/site.toml --older-than-days 2\n"
      "The files are identifiable (they were never de-identified): they are kept only with [scp]\n"
      "keep_quarantined = true, in <incoming>/quarantine (mode 0700), and deleted by the receiver after\n"
      "[scp] quarantine_retention_days (7 by default). Reasons come from the workspace index; a file sent\n"
      "again after the cause is fixed is ingested anew.");
  auto* list = q->add_subcommand("list", "The kept files, oldest first: name, size, age, reason");
  list->add_option("--config", cmd.config, "site.toml")->required()->envname("FEDTUNE_SITE_CONFIG")
      ->check(CLI::ExistingFile);
  list->add_flag("--json", cmd.json, "Print JSON: [{name, bytes, age_days, reason, detail}]");
  list->callback([&cmd] { throw CLI::RuntimeError(RunQuarantineList(cmd)); });
  auto* purge = q->add_subcommand("purge", "Delete kept files (all, or those older than --older-than-days)");
  purge->add_option("--config", cmd.config, "site.toml")->required()->envname("FEDTUNE_SITE_CONFIG")
      ->check(CLI::ExistingFile);
  purge->add_option("--older-than-days", cmd.older_than_days, "Only files kept longer than this")
      ->check(CLI::NonNegativeNumber);
  purge->add_flag("--json", cmd.json, "Print JSON: {removed}");
  purge->callback([&cmd] { throw CLI::RuntimeError(RunQuarantinePurge(cmd)); });
}

int RunQuarantineList(const QuarantineCommand& cmd) {
  auto config = LoadSiteConfig(cmd.config);
  if (!config.ok()) {
    std::cerr << "fedtune-site quarantine list: " << config.status().message() << "\n";
    return 1;
  }
  auto kept = scp::ListKeptQuarantine(config->scp.options.incoming_dir, config->ingest.workspace);
  if (!kept.ok()) {
    std::cerr << "fedtune-site quarantine list: " << kept.status().message() << "\n";
    return 1;
  }
  if (cmd.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& k : *kept) {
      out.push_back({{"name", k.name}, {"bytes", k.bytes}, {"age_days", k.age_days}, {"reason", k.reason},
                     {"detail", k.detail}});
    }
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  if (kept->empty()) {
    std::cout << "no quarantined files are kept in " << scp::KeptQuarantineDir(config->scp.options.incoming_dir)
              << (config->scp.options.keep_quarantined ? "" : " ([scp] keep_quarantined is off)") << "\n";
    return 0;
  }
  for (const auto& k : *kept) {
    std::printf("%-40s %10lld bytes  %5.1f days  %s%s%s\n", k.name.c_str(), static_cast<long long>(k.bytes),
                k.age_days, k.reason.empty() ? "(no record in the index)" : k.reason.c_str(),
                k.detail.empty() ? "" : ": ", k.detail.c_str());
  }
  std::cout << kept->size() << " file(s); deleted after " << config->scp.options.quarantine_retention_days
            << " day(s), or now with `fedtune-site quarantine purge`\n";
  return 0;
}

int RunQuarantinePurge(const QuarantineCommand& cmd) {
  auto config = LoadSiteConfig(cmd.config);
  if (!config.ok()) {
    std::cerr << "fedtune-site quarantine purge: " << config.status().message() << "\n";
    return 1;
  }
  auto removed = scp::PurgeKeptQuarantine(config->scp.options.incoming_dir, cmd.older_than_days);
  if (!removed.ok()) {
    std::cerr << "fedtune-site quarantine purge: " << removed.status().message() << "\n";
    return 1;
  }
  if (cmd.json) {
    std::cout << nlohmann::json{{"removed", *removed}}.dump() << "\n";
  } else {
    std::cout << "deleted " << *removed << " kept quarantined file(s)\n";
  }
  return 0;
}

}  // namespace fedtune::site
