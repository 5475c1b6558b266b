#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "site-agent/cli/commands.h"
#include "site-agent/config/site_config.h"
#include "site-agent/ingest/site_stats.h"
#include "site-agent/runner/disclosure.h"

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

namespace {

// The disclosure control this site applies, as --shareable --json states it.
nlohmann::json Protection(const SiteConfig& c) {
  return {{"k", c.k_threshold},
          {"counts_resent_when_changed_by_at_least", c.k_threshold},
          {"evaluation_histogram_cells_at_least", c.k_threshold},
          {"confusion_counts_below_k", "withheld with sensitivity, specificity, F1 and MCC"},
          {"min_train_images", std::max<int64_t>(c.min_train_images, c.k_threshold)},
          {"max_evaluations_per_job", c.max_evaluations_per_job},
          {"share_local_model", c.share_local_model},
          {"burned_in_text", std::string(ingest::BurnedInModeName(c.ingest.burned_in.mode))},
          {"model_updates", "in the clear, or masked where the job sets [privacy] secure_aggregation"}};
}

}  // namespace

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
  if (cmd.shareable) {
    // Exactly what the daemon would send now: counts that moved by less
    // than k since its last summary are shown as it sent them.
    const v1::DatasetSummary sent = SummaryToShare(config->ingest.workspace, config->k_threshold, /*keep=*/false);
    for (const auto& sp : sent.splits()) {
      auto it = s.splits.find(sp.split());
      if (it == s.splits.end()) continue;
      it->second.images = sp.images();
      it->second.patients = sp.patients();
      for (int i = 0; i < sp.positives_size() && i < static_cast<int>(it->second.positives.size()); ++i) {
        it->second.positives[static_cast<size_t>(i)] = sp.positives(i);
      }
      for (int i = 0; i < sp.negatives_size() && i < static_cast<int>(it->second.negatives.size()); ++i) {
        it->second.negatives[static_cast<size_t>(i)] = sp.negatives(i);
      }
    }
    s.quarantined = sent.quarantined();
  }
  auto count = [](int64_t v) { return v < 0 ? std::string("<k") : std::to_string(v); };
  auto json_count = [](int64_t v) { return v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v); };
  auto json_counts = [&](const std::vector<int64_t>& v) {
    nlohmann::json a = nlohmann::json::array();
    for (int64_t x : v) a.push_back(json_count(x));
    return a;
  };
  if (cmd.json) {
    nlohmann::json j;
    j["site"] = config->site_id;
    j["findings"] = s.findings;
    j["k_threshold"] = cmd.shareable ? config->k_threshold : 0;
    for (const auto& [name, split] : s.splits) {
      j["splits"][name] = {{"images", json_count(split.images)},
                           {"patients", json_count(split.patients)},
                           {"positives", json_counts(split.positives)},
                           {"negatives", json_counts(split.negatives)},
                           {"unlabelled", json_counts(split.unlabelled)},
                           {"without_labels", json_count(split.without_labels)}};
    }
    j["quarantined"] = json_count(s.quarantined);
    nlohmann::json reasons = nlohmann::json::object();
    for (const auto& [reason, n] : s.quarantine_reasons) reasons[reason] = json_count(n);
    j["quarantine_reasons"] = reasons;
    if (cmd.shareable) j["protection"] = Protection(*config);
    if (!cmd.shareable) {
      j["split"] = s.split_setting;
      j["data_seq"] = s.data_seq;
      if (!s.latest_job.empty()) {
        j["latest_job"] = {{"job_id", s.latest_job},
                           {"data_seq", s.latest_job_data_seq},
                           {"images_since", s.images_since_latest_job}};
      }
    }
    std::cout << j.dump(2) << "\n";
    return 0;
  }
  std::cout << "site " << config->site_id << (cmd.shareable ? " (shareable: counts below k suppressed)" : "") << "\n";
  if (!cmd.shareable && !s.split_setting.empty()) std::cout << "  split: " << s.split_setting << " (pinned)\n";
  for (const auto& [name, split] : s.splits) {
    std::cout << "  " << name << ": " << count(split.images) << " images, " << count(split.patients) << " patients";
    if (split.without_labels != 0) std::cout << ", " << count(split.without_labels) << " without any label";
    std::cout << "\n";
    for (size_t f = 0; f < s.findings.size() && f < split.positives.size(); ++f) {
      std::cout << "    " << s.findings[f] << ": " << count(split.positives[f]) << " positive, "
                << count(split.negatives[f]) << " negative";
      if (split.unlabelled[f] != 0) std::cout << ", " << count(split.unlabelled[f]) << " unlabelled (masked)";
      std::cout << "\n";
    }
  }
  std::cout << "  quarantined: " << count(s.quarantined) << "\n";
  for (const auto& [reason, n] : s.quarantine_reasons) std::cout << "    " << reason << ": " << count(n) << "\n";
  if (!cmd.shareable && !s.latest_job.empty()) {
    std::cout << "  latest job " << s.latest_job << " trains on the data as of its start";
    if (s.images_since_latest_job > 0) {
      std::cout << "; " << s.images_since_latest_job << " images arrived since: they join the next job";
    }
    std::cout << "\n";
  }
  if (cmd.shareable) {
    std::cout << "  how this site protects what it shares ([stats] in site.toml):\n"
              << "    k = " << config->k_threshold
              << ": every count below k is withheld (<k), with any count it could be derived from; summary\n"
                 "      counts are sent again only when they change by k or more; evaluation histograms are merged\n"
                 "      into cells of at least k cases per class, ROC points follow those cells, confusion counts\n"
                 "      below k are withheld with the metrics computed from them\n"
              << "    min_train_images = " << std::max<int64_t>(config->min_train_images, config->k_threshold)
              << ": a training task on fewer images is refused\n"
              << "    max_evaluations_per_job = " << config->max_evaluations_per_job
              << ": evaluation tasks one job may have here\n"
              << "    share_local_model = " << (config->share_local_model ? "true" : "false")
              << (config->share_local_model ? ": this site's local-only baseline may be evaluated at other sites\n"
                                            : ": this site's local-only baseline is evaluated here only\n")
              << "    burned_in = \"" << ingest::BurnedInModeName(config->ingest.burned_in.mode)
              << "\": text in the pixels of images not declared free of it is "
              << (config->ingest.burned_in.mode == ingest::BurnedInMode::kQuarantine ? "quarantined"
                  : config->ingest.burned_in.mode == ingest::BurnedInMode::kRedact   ? "blacked out"
                                                                                     : "not looked for")
              << "\n"
              << "    model updates: sent in the clear to the coordinator, unless the job aggregates securely\n"
                 "      ([privacy] secure_aggregation in the job file): then this site sends its update masked, so\n"
                 "      that the coordinator learns only the sum of the sites' updates, and checks every other\n"
                 "      site's keys against the federation's CA; differential privacy is set per job too; the\n"
                 "      report states both\n";
  }
  return 0;
}

}  // namespace fedtune::site
