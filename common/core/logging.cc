#include "common/core/logging.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <cstdlib>
#include <memory>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/core/status.h"

namespace fedtune {

absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(std::string_view name) {
  const std::string lower = absl::AsciiStrToLower(Sv(name));
  static constexpr std::pair<std::string_view, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
      {"warning", spdlog::level::warn}, {"error", spdlog::level::err},
      {"critical", spdlog::level::critical}, {"off", spdlog::level::off},
  };
  for (const auto& [n, level] : kLevels) {
    if (lower == n) return level;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown log level \"", Sv(name), "\" (use trace, debug, info, warn, error, critical or off)"));
}

absl::Status InitLogging(const LogOptions& options) {
  std::string level_name = options.level;
  if (const char* env = std::getenv("FEDTUNE_LOG_LEVEL"); env != nullptr && *env != '\0') {
    level_name = env;
  }
  auto level = ParseLogLevel(level_name);
  if (!level.ok()) return level.status();

  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!options.file.empty()) {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>(options.file));
    } catch (const spdlog::spdlog_ex& e) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot open log file ", options.file, ": ", e.what()));
    }
  }
  auto logger = std::make_shared<spdlog::logger>(options.component, sinks.begin(), sinks.end());
  logger->set_level(*level);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%-5l%$ [%n] %v");
  // Every line of info and above reaches the file at once: operators follow
  // the log live (tail -f, the demo waits for lines), and a daemon's lines
  // are few. (A periodic flusher would be a thread started before the
  // daemons block their termination signals.)
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
  return absl::OkStatus();
}

}  // namespace fedtune
