// Logging for every fedtune process (spdlog). Patient identifiers are never
// logged: see common/core/phi.h for the rule and the Phi<T> type that
// enforces it; a Phi formats as "[PHI]" here.
#pragma once

#include <spdlog/spdlog.h>

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/core/phi.h"

namespace fedtune {

struct LogOptions {
  // trace, debug, info, warn, error, critical, off.
  std::string level = "info";
  // Also append to this file when non-empty (missing directories are created).
  std::string file;
  // Name shown in each line: "coordinator", "site", "fedtune".
  std::string component = "fedtune";
};

// "info" -> spdlog::level::info; INVALID_ARGUMENT names the accepted levels.
absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(std::string_view name);

// Replaces spdlog's default logger: stderr (colored on a terminal) plus the
// optional file. FEDTUNE_LOG_LEVEL in the environment overrides
// `options.level`. Safe to call again (tests, reconfiguration).
absl::Status InitLogging(const LogOptions& options);

}  // namespace fedtune

template <typename T>
struct fmt::formatter<fedtune::Phi<T>> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const fedtune::Phi<T>&, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(fedtune::Phi<T>::kRedacted, ctx);
  }
};
