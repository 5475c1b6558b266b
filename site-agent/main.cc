// fedtune-site: the hospital-side tool and daemon.
#include <CLI/CLI.hpp>
#include <sys/stat.h>

#include <iostream>

#include "site-agent/cli/commands.h"

int main(int argc, char** argv) {
  ::umask(077);  // workspaces, keys and received files: the service account's alone
  CLI::App app{"fedtune-site: prepares a hospital's radiographs for federated fine-tuning; nothing identifying "
               "ever leaves this host"};
  app.require_subcommand(1);
  app.footer("Run `fedtune-site COMMAND --help` for a command's options and an example.");
  fedtune::site::SynthCommand synth;
  fedtune::site::IngestCommand ingest;
  fedtune::site::StatsCommand stats;
  fedtune::site::SetupSynth(app, synth);
  fedtune::site::SetupIngest(app, ingest);
  fedtune::site::RunCommand run;
  fedtune::site::ReceiveCommand receive;
  fedtune::site::SetupStats(app, stats);
  fedtune::site::LabelsCommand labels;
  fedtune::site::SetupLabels(app, labels);
  fedtune::site::SplitCommand split;
  fedtune::site::SetupSplit(app, split);
  fedtune::site::SetupReceive(app, receive);
  fedtune::site::SetupRun(app, run);
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // a subcommand finished with this code
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;  // --help is success; usage errors are 2
  }
  return 0;
}
