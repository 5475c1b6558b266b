// Runs Debian's python3 (the independent reference for torch and sklearn
// figures) from tests. FEDTUNE_PYTHON3 and FEDTUNE_SOURCE_DIR come from CMake.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

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
  const std::string cmd = Python3() + " " + SourceDir() + "/tests/python/" + script + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  output->clear();
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) output->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace fedtune::testing
