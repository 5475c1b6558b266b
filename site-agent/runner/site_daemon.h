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

#include "common/core/metrics.h"
#include "site-agent/config/site_config.h"
#include "site-agent/runner/task_executor.h"

namespace fedtune::site {

// How site.toml configures the task executor (the daemon's, and a simulated
// site's).
ExecutorOptions ExecutorOptionsFor(const SiteConfig& config);

// Runs until *stop becomes true; returns the process exit code (0 after a
// requested stop, 1 when it cannot start: missing certificates, backbone or
// workspace). When `data_version` (optional) changes, the workspace gained
// images (the DICOM receiver ingested some): the agent joins again so the
// coordinator holds the current dataset summary.
// `metrics` (optional) receives the connection state, tasks by kind and
// outcome, task durations and training throughput.
// `on_serving` (optional) is called, with the site's backbone SHA-256,
// whenever workspace/models/current becomes the model this site serves (at
// start when one is held, after a promotion or a rollback).
int RunSiteDaemon(const SiteConfig& config, const std::atomic<bool>* stop,
                  const std::function<int64_t()>& data_version = {}, MetricsRegistry* metrics = nullptr,
                  const std::function<void(const std::string& backbone_sha256)>& on_serving = {});

}  // namespace fedtune::site
