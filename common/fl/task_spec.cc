#include "common/fl/task_spec.h"

#include "absl/strings/str_cat.h"
#include "common/core/status.h"

namespace fedtune::fl {

absl::StatusOr<model::ModelSpec> ModelSpecFor(std::string_view architecture, const v1::TrainConfig& c) {
  model::ModelSpec spec;
  ASSIGN_OR_RETURN(spec.vit, model::ViTPreset(architecture));
  if (c.image_size() > 0) spec.vit.image_size = c.image_size();
  spec.findings.assign(c.findings().begin(), c.findings().end());
  ASSIGN_OR_RETURN(spec.method, model::ParseFineTuneMethod(c.method().empty() ? "lora" : c.method()));
  ASSIGN_OR_RETURN(spec.pooling, model::ParsePooling(c.head_pooling().empty() ? "cls_mean" : c.head_pooling()));
  if (spec.method == model::FineTuneMethod::kLora) {
    spec.lora.rank = c.lora_rank();
    spec.lora.alpha = c.lora_alpha();
    spec.lora.dropout = c.lora_dropout();
    spec.lora.rslora = c.use_rslora();
    spec.lora.targets.assign(c.lora_targets().begin(), c.lora_targets().end());
    spec.lora.freeze_a = c.freeze_lora_a();
  }
  RETURN_IF_ERROR(model::Validate(spec));
  return spec;
}

model::TrainOptions TrainOptionsFor(const v1::TrainConfig& c, uint64_t extra_seed) {
  model::TrainOptions o;
  o.epochs = c.local_epochs();
  o.batch_size = c.batch_size();
  o.learning_rate = c.learning_rate();
  o.weight_decay = c.weight_decay();
  o.warmup_fraction = c.warmup_fraction();
  o.grad_clip_norm = c.grad_clip_norm();
  o.fedprox_mu = c.fedprox_mu();
  o.max_train_samples = c.max_train_samples();
  // A federation's tasks carry the class weights the coordinator fixed for
  // the job; "site" (and tasks of older coordinators) weigh by the site's
  // own counts.
  if (c.class_weights() == "none") {
    o.class_weighting = model::ClassWeighting::kNone;
  } else if (c.class_weights() == "federation") {
    o.class_weighting = model::ClassWeighting::kGiven;
    o.pos_weight.assign(c.pos_weight().begin(), c.pos_weight().end());
  }
  o.seed = static_cast<uint64_t>(c.seed()) * 1000003u + extra_seed;
  // A round's update is the state after its last local epoch (FedAvg); the
  // local-only baselines follow the same protocol so the comparison is fair.
  o.keep_best_epoch = false;
  return o;
}

}  // namespace fedtune::fl
