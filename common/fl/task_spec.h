// The bridge between a task on the wire (TrainConfig + backbone architecture)
// and the model core: both the coordinator (initial global weights, export)
// and the site agent (training) build the model from the same function, so
// the two sides always agree on tensor names and shapes. Torch-free.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "common/model/classifier.h"
#include "common/model/model_config.h"
#include "fedtune/v1/federation.pb.h"

namespace fedtune::fl {

// Safetensors metadata on every file that holds a global state (versions,
// updates, local-only models): the format of checkpoint.h, where trained
// backbone tensors are differences from the base weights. A file without it
// comes from an older release that shipped them as values; a site refuses
// such weights for the methods that train backbone tensors.
inline constexpr char kGlobalStateFormatKey[] = "fedtune.state";
inline constexpr char kGlobalStateFormat[] = "backbone-differences/1";

// safetensors metadata of a site's local-only baseline that its site keeps to
// itself ([stats] share_local_model = false): the site's id. The coordinator
// evaluates such a model at that site only; every site agent refuses to
// evaluate another site's model so marked.
inline constexpr char kHomeOnlyKey[] = "fedtune.home_only";

// The model a task trains: the backbone preset `architecture` at the config's
// image size, its findings, method, LoRA settings and head pooling.
// INVALID_ARGUMENT names the offending field.
absl::StatusOr<model::ModelSpec> ModelSpecFor(std::string_view architecture, const v1::TrainConfig& config);

// Local training options for one round (augmentation on, seeded by the job
// seed, the round and the site so no two sites draw the same batches; the
// task's class weights).
model::TrainOptions TrainOptionsFor(const v1::TrainConfig& config, uint64_t extra_seed);

}  // namespace fedtune::fl
