// The site agent's daemon loop (`fedtune-site run`): dials out to the
// coordinator over mutual TLS, joins with its capabilities and shareable
// dataset summary, long-polls for tasks, fetches weights in resumable chunks
// with a SHA-256 check, runs each task with TaskExecutor, reports progress,
// submits the result (retrying through coordinator restarts until the task's
// deadline), and reconnects with capped exponential backoff.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "site-agent/cli/site_config.h"

namespace fedtune::site {

// Runs until *stop becomes true; returns the process exit code (0 after a
// requested stop, 1 when it cannot start: missing certificates, backbone or
// workspace). When `data_version` (optional) changes, the workspace gained
// images (the DICOM receiver ingested some): the agent joins again so the
// coordinator holds the current dataset summary.
int RunSiteDaemon(const SiteConfig& config, const std::atomic<bool>* stop,
                  const std::function<int64_t()>& data_version = {});

}  // namespace fedtune::site
