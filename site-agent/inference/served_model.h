// The federation's model in use, as a site keeps it (workspace/models/):
// `current` is what the site serves, `previous` the one before it (kept for
// a rollback, which then needs no download). Each is a safetensors file of
// the global version and its description (ServedModel: the promotion with
// its thresholds, and the model's shape).
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "fedtune/v1/federation.pb.h"

namespace fedtune::site {

struct HeldModel {
  v1::ServedModel served;
  std::string weights_path;
};

// "current" or "previous"; nullopt when the site holds none (or its files
// are incomplete).
absl::StatusOr<std::optional<HeldModel>> LoadHeldModel(const std::string& workspace, const std::string& which);

// Makes `served` with `weights` (checked against the promotion's SHA-256)
// the current model; the current one becomes the previous.
absl::Status InstallServedModel(const std::string& workspace, const v1::ServedModel& served,
                                const std::string& weights);

// When the previous model is `served`'s version (a rollback), swaps current
// and previous and records `served` as current; false when it is not.
absl::StatusOr<bool> ReturnToPrevious(const std::string& workspace, const v1::ServedModel& served);

}  // namespace fedtune::site
