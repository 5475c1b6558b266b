// fedtune-site: the hospital-side tool and daemon.
#include <CLI/CLI.hpp>
#include <sys/stat.h>

#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "site-agent/cli/commands.h"

namespace {

// `--config FILE` and `--json` belong to the commands, but habit puts them
// first too (`fedtune-site --config site.toml stats`): those given before the
// command are moved after it.
std::vector<std::string> CommandOptionsLast(int argc, char** argv) {
  std::vector<std::string> lead, rest;
  int i = 1;
  for (; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--json" || a.rfind("--config=", 0) == 0) {
      lead.emplace_back(a);
    } else if (a == "--config" && i + 1 < argc) {
      lead.emplace_back(a);
      lead.emplace_back(argv[++i]);
    } else {
      break;
    }
  }
  std::vector<std::string> out{argv[0]};
  for (; i < argc; ++i) out.emplace_back(argv[i]);
  out.insert(out.end(), lead.begin(), lead.end());
  return out;
}

}  // namespace

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
  fedtune::site::QuarantineCommand quarantine;
  fedtune::site::SetupQuarantine(app, quarantine);
  fedtune::site::SetupRun(app, run);
  fedtune::site::ServeCommand serve;
  fedtune::site::SetupServe(app, serve);
  fedtune::site::BackboneCommand backbone;
  fedtune::site::SetupBackbone(app, backbone);
  std::vector<std::string> args = CommandOptionsLast(argc, argv);
  std::vector<char*> arg_ptrs;
  for (auto& a : args) arg_ptrs.push_back(a.data());
  try {
    app.parse(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // a subcommand finished with this code
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;  // --help is success; usage errors are 2
  }
  return 0;
}
