#include "coordinator/engine/initial_weights.h"

#include "common/fl/task_spec.h"
#include "common/model/classifier.h"

namespace fedtune::coordinator {

absl::StatusOr<TensorMap> InitialWeights(const JobSpec& job) {
  auto spec = fl::ModelSpecFor(job.backbone_architecture, job.train);
  if (!spec.ok()) return spec.status();
  model::ClassifierOptions o;
  o.device = "cpu";
  o.threads = 1;
  o.seed = static_cast<uint64_t>(job.train.seed());
  auto model = model::Classifier::Create(*spec, o);
  if (!model.ok()) return model.status();
  return (*model)->GlobalState();
}

}  // namespace fedtune::coordinator
