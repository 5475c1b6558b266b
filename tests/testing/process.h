// Child processes for integration tests: start a binary with its output in a
// log file, signal it, wait for it. Header-only, POSIX.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace fedtune::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  // Starts argv[0] (a path) with `argv`, in `cwd` when non-empty, stdout and
  // stderr appended to `log`. pid() is 0 if it could not start.
  ChildProcess(const std::vector<std::string>& argv, const std::string& log, const std::string& cwd = "") {
    pid_ = fork();
    if (pid_ == 0) {
      if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
      }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    if (pid_ < 0) pid_ = 0;
  }
  ChildProcess(ChildProcess&& o) noexcept : pid_(o.pid_) { o.pid_ = 0; }
  ChildProcess& operator=(ChildProcess&& o) noexcept {
    if (this != &o) {
      Stop();
      pid_ = o.pid_;
      o.pid_ = 0;
    }
    return *this;
  }
  ~ChildProcess() { Stop(); }

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }

  // SIGKILL, as a power cut or the OOM killer would.
  void Kill9() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = 0;
  }

  // Waits up to `timeout` for the process to end by itself, then stops it as
  // Stop() does; returns its exit code (-1 if it had to be killed).
  int Wait(std::chrono::milliseconds timeout) { return End(timeout, false); }

  // SIGTERM, then SIGKILL after `grace`; returns the exit code (-1 if killed).
  int Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(10000)) { return End(grace, true); }

 private:
  int End(std::chrono::milliseconds grace, bool terminate) {
    if (pid_ <= 0) return -1;
    if (terminate) kill(pid_, SIGTERM);
    const auto until = std::chrono::steady_clock::now() + grace;
    int status = 0;
    while (std::chrono::steady_clock::now() < until) {
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    Kill9();
    return -1;
  }

  pid_t pid_ = 0;
};

}  // namespace fedtune::testing
