// Runs Debian's python3 (the independent reference for torch and sklearn
// figures) from tests. FEDTUNE_PYTHON3 and FEDTUNE_SOURCE_DIR come from CMake.
#pragma once

#include <cstdlib>
#include <string>

#include "tests/testing/run_command.h"

namespace fedtune::testing {

inline std::string Python3() { return FEDTUNE_PYTHON3; }
inline std::string SourceDir() { return FEDTUNE_SOURCE_DIR; }

// True when the reference interpreter can import every module named
// (space-separated), e.g. "torch sklearn".
inline bool PythonHas(const std::string& modules) {
  std::string imports;
  for (size_t i = 0, j; i < modules.size(); i = j + 1) {
    j = modules.find(' ', i);
    if (j == std::string::npos) j = modules.size();
    imports += "import " + modules.substr(i, j - i) + ";";
  }
  const std::string cmd = Python3() + " -c '" + imports + "' >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// Runs tests/python/<script> with `args`; returns its exit status and puts
// stdout+stderr into *output.
inline int RunPythonScript(const std::string& script, const std::string& args, std::string* output) {
  return RunCommand(Python3() + " " + SourceDir() + "/tests/python/" + script + " " + args, output);
}

}  // namespace fedtune::testing
