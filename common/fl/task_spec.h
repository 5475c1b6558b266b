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

// The model a task trains: the backbone preset `architecture` at the config's
// image size, its findings, method, LoRA settings and head pooling.
// INVALID_ARGUMENT names the offending field.
absl::StatusOr<model::ModelSpec> ModelSpecFor(std::string_view architecture, const v1::TrainConfig& config);

// Local training options for one round (augmentation on, seeded by the job
// seed, the round and the site so no two sites draw the same batches; the
// task's class weights).
model::TrainOptions TrainOptionsFor(const v1::TrainConfig& config, uint64_t extra_seed);

}  // namespace fedtune::fl
