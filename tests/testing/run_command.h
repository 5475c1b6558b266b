// Runs a shell command from tests and benchmarks and captures what it prints.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace fedtune::testing {

// Runs `command` with /bin/sh, stderr merged into stdout; puts the output into
// *output and returns the exit status (-1 when it could not run or was killed).
inline int RunCommand(const std::string& command, std::string* output) {
  output->clear();
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) output->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline bool HaveCurl() { return std::system("command -v curl >/dev/null 2>&1") == 0; }

// `curl ARGS` with the HTTP status written after the body: returns the
// status (negative: curl's own exit code, no HTTP answer) and the body in
// *body.
inline int Curl(const std::string& args, std::string* body) {
  std::string out;
  const int rc = RunCommand("curl -sS --max-time 30 -w '\\n%{http_code}' " + args, &out);
  const size_t nl = out.rfind('\n');
  *body = nl == std::string::npos ? out : out.substr(0, nl);
  if (rc != 0) return -rc;
  return std::stoi(out.substr(nl + 1));
}

}  // namespace fedtune::testing
