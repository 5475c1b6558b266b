// fedtune: the federation operator's command line. Talks to the coordinator's
// Admin API with an admin certificate (OU=admin); `backbone init` works
// offline. One file per command group; cli_common.h holds what they share.
#include <CLI/CLI.hpp>

#include "coordinator/cli/cli_common.h"

int main(int argc, char** argv) {
  using namespace fedtune::cli;
  if (IsSimulatorCommand(argc, argv)) return RunSimulator(argc, argv);
  CLI::App app{"fedtune: operate a fedtune federation. Submit and follow fine-tuning jobs, list sites, export "
               "models. Talks to the coordinator over mutual TLS with an admin certificate."};
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  export FEDTUNE_COORDINATOR=coordinator.example.org:7443 FEDTUNE_CA=pki/ca.pem \\\n"
      "         FEDTUNE_CERT=pki/admin/alice.pem FEDTUNE_KEY=pki/admin/alice.key\n"
      "  fedtune sites\n"
      "  fedtune job submit deploy/examples/job.toml\n"
      "  fedtune job watch job-1a2b3c4d5e\n"
      "  fedtune model export job-1a2b3c4d5e --out ./adapter\n"
      "  fedtune simulate --config deploy/examples/sim.toml      (offline: virtual sites in one process)\n"
      "Run `fedtune COMMAND --help` for each command.");
  // Global options are taken before or after the command (`fedtune job list --json`).
  app.fallthrough();
  Globals g;
  app.add_option("--coordinator", g.coordinator, "host:port of the coordinator")
      ->envname("FEDTUNE_COORDINATOR")
      ->capture_default_str();
  app.add_option("--ca", g.ca, "federation CA certificate (PKI/ca.pem)")->envname("FEDTUNE_CA");
  app.add_option("--cert", g.cert, "admin certificate (PKI/admin/NAME.pem)")->envname("FEDTUNE_CERT");
  app.add_option("--key", g.key, "admin private key (PKI/admin/NAME.key)")->envname("FEDTUNE_KEY");
  app.add_flag("--json", g.json, "machine-readable output");

  int code = 0;
  Args args;
  SetupJob(app, g, args, code);
  SetupSites(app, g, code);
  SetupModel(app, g, args, code);
  SetupReport(app, g, args, code);
  SetupBackbone(app, g, args, code);
  SetupSimulatorCommands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int c = app.exit(e);
    return c == 0 ? 0 : 2;
  }
  return code;
}

