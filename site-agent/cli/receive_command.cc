// `fedtune-site receive`: the DICOM storage SCP alone, until SIGINT/SIGTERM.
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/core/file_io.h"
#include "common/core/logging.h"
#include "common/core/signals.h"
#include "site-agent/cli/commands.h"
#include "site-agent/config/site_config.h"
#include "site-agent/dicom_scp/store_scp.h"

namespace fedtune::site {

void SetupReceive(CLI::App& app, ReceiveCommand& cmd) {
  auto* sub = app.add_subcommand(
      "receive", "Receive CR/DX radiographs from the PACS (DICOM C-STORE) and ingest each one as it arrives");
  sub->footer(
      "Example:\n  fedtune-site receive --config /etc/fedtune/site.toml\n"
      "Configured in [scp] of site.toml: address (default 127.0.0.1), port (11112), ae_title (FEDTUNE),\n"
      "allowed_calling_aes (required: the PACS/modality AE titles), allowed_hosts, labels. Test it with\n"
      "  echoscu -aec FEDTUNE -aet PACS 127.0.0.1 11112\n"
      "  storescu -aec FEDTUNE -aet PACS 127.0.0.1 11112 image.dcm   (-xr: RLE files, -xt: JPEG-LS files)\n"
      "Accepted: CR and DX storage, uncompressed, RLE, JPEG (lossless, baseline, extended), JPEG-LS.\n"
      "`fedtune-site run` starts the same receiver when [scp] enabled = true. Received files wait in [scp]\n"
      "incoming (identifiable, mode 0700) only until ingested. Stops cleanly on SIGINT/SIGTERM.");
  sub->add_option("--config", cmd.config, "site.toml")->required()->envname("FEDTUNE_SITE_CONFIG")
      ->check(CLI::ExistingFile);
  sub->add_option("--port-file", cmd.port_file, "Write the bound port here once listening (with [scp] port = 0)");
  sub->add_flag("--json", cmd.json, "Print the final counts as JSON");
  sub->callback([&cmd] { throw CLI::RuntimeError(RunReceive(cmd)); });
}

int RunReceive(const ReceiveCommand& cmd) {
  auto config = LoadSiteConfigAndStartLogging(cmd.config);
  if (!config.ok()) {
    std::cerr << "fedtune-site receive: " << config.status().message() << "\n";
    return 2;
  }
  const TerminationSignals signals;  // before any thread starts
  auto scp = scp::StoreScp::Start(config->scp.options, ScpIngestOptions(*config));
  if (!scp.ok()) {
    std::cerr << "fedtune-site receive: " << cmd.config << ": " << scp.status().message() << "\n";
    return 1;
  }
  if (!cmd.port_file.empty()) {
    if (auto st = WriteFileAtomically(cmd.port_file, std::to_string((*scp)->port()) + "\n"); !st.ok()) {
      std::cerr << "fedtune-site receive: " << st.message() << "\n";
      return 1;
    }
  }
  signals.Wait();
  (*scp)->Stop();
  const scp::StoreScpCounters c = (*scp)->Counters();
  if (cmd.json) {
    std::cout << nlohmann::json{{"associations", c.associations}, {"refused", c.refused},
                                {"received", c.received},         {"store_failures", c.store_failures},
                                {"ingested", c.ingested},         {"already_done", c.already_done},
                                {"quarantined", c.quarantined},   {"ingest_errors", c.ingest_errors},
                                {"pending", (*scp)->Pending()}}
                     .dump()
              << "\n";
  } else {
    std::cout << "received " << c.received << " file(s): ingested " << c.ingested << ", already present "
              << c.already_done << ", quarantined " << c.quarantined << "; " << c.refused << " refused, "
              << c.store_failures << " failed stores, " << (*scp)->Pending() << " waiting to be ingested\n";
  }
  return c.ingest_errors > 0 ? 1 : 0;
}

}  // namespace fedtune::site
