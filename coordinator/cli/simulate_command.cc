// `fedtune simulate` and `fedtune study`: run by fedtune-sim, the program
// that links the round engine and the site's task executor in one process.
// The operator's CLI never links site code, so it hands these commands to
// that program (as git hands `git foo` to git-foo).
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "coordinator/cli/cli_common.h"

namespace fedtune::cli {
namespace {

namespace fs = std::filesystem;

// FEDTUNE_SIM, else fedtune-sim next to this program (installed) or in the
// build tree's simulator/ (a developer's build), else on PATH.
std::string SimProgram() {
  if (const char* env = std::getenv("FEDTUNE_SIM"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (const fs::path& p : {self.parent_path() / "fedtune-sim", self.parent_path().parent_path() / "simulator" /
                                                                     "fedtune-sim"}) {
      if (fs::exists(p, ec)) return p.string();
    }
  }
  return "fedtune-sim";
}

}  // namespace

bool IsSimulatorCommand(int argc, char** argv) {
  return argc > 1 && (std::strcmp(argv[1], "simulate") == 0 || std::strcmp(argv[1], "study") == 0);
}

int RunSimulator(int argc, char** argv) {
  const std::string program = SimProgram();
  std::vector<char*> args;
  args.push_back(const_cast<char*>(program.c_str()));
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  args.push_back(nullptr);
  ::execvp(program.c_str(), args.data());
  std::cerr << "fedtune " << argv[1] << ": cannot run " << program << " (" << std::strerror(errno)
            << "): it is built and installed with fedtune; put it next to fedtune or on PATH, or name it in "
               "FEDTUNE_SIM\n";
  return 127;
}

void SetupSimulatorCommands(CLI::App& app) {
  // Listed for --help; main() hands both to fedtune-sim before parsing.
  app.add_subcommand("simulate", "Run a job over virtual sites in one process (fedtune simulate --help)");
  app.add_subcommand("study", "Run a scaling, methods or strategies study over a simulated federation "
                              "(fedtune study --help)");
}

}  // namespace fedtune::cli
