// Clean shutdown of fedtune daemons: SIGINT and SIGTERM are blocked in every
// thread and taken by one sigwait, so no thread is interrupted mid-write.
#pragma once

#include <pthread.h>
#include <signal.h>

namespace fedtune {

class TerminationSignals {
 public:
  // Blocks SIGINT and SIGTERM in the calling thread and in every thread it
  // starts afterwards: construct before any other thread exists.
  TerminationSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  // Waits for one of them; returns its number.
  int Wait() const {
    int sig = 0;
    sigwait(&set_, &sig);
    return sig;
  }

 private:
  sigset_t set_;
};

}  // namespace fedtune
