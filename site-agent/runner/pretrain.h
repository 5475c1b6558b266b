// A backbone trained on an ingested workspace of public (non-federated)
// data, the way foundation models are made, for when none is at hand:
// full fine-tuning of a classifier on the workspace's training split
// (validated on its val split), then the backbone alone is written.
// `fedtune-site backbone pretrain` and the simulator's synthetic
// federations (sim.toml [synth] pretrain_patients) use it.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/classifier.h"

namespace fedtune::site {

struct PretrainOptions {
  std::string workspace;
  std::vector<std::string> findings;
  std::string arch = "vit-tiny/16";
  int image_size = 0;  // 0: the preset's
  int epochs = 10;
  int batch_size = 32;
  double learning_rate = 5e-4;
  uint64_t seed = 0;
  std::string device = "auto";
  std::string out;  // the .safetensors file written
};

struct PretrainResult {
  std::string path;
  std::string sha256;
  double best_val_auroc = 0;
};

absl::StatusOr<PretrainResult> PretrainBackbone(const PretrainOptions& options,
                                                const model::ProgressCallback& progress = {});

}  // namespace fedtune::site
