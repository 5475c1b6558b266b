#include "site-agent/runner/pretrain.h"

#include "absl/strings/str_cat.h"
#include "common/core/hashing.h"
#include "common/core/status.h"
#include "common/fl/task_spec.h"
#include "site-agent/runner/cache_dataset.h"

namespace fedtune::site {

absl::StatusOr<PretrainResult> PretrainBackbone(const PretrainOptions& options,
                                                const model::ProgressCallback& progress) {
  v1::TrainConfig tc;
  for (const auto& f : options.findings) tc.add_findings(f);
  tc.set_method("full");
  tc.set_image_size(options.image_size);
  ASSIGN_OR_RETURN(model::ModelSpec spec, fl::ModelSpecFor(options.arch, tc));
  CacheDatasetOptions dso;
  dso.findings = spec.findings;
  ASSIGN_OR_RETURN(auto train, CacheDataset::Open(options.workspace, dso));
  dso.split = "val";
  ASSIGN_OR_RETURN(auto val, CacheDataset::Open(options.workspace, dso));
  if (train->size() == 0) return absl::FailedPreconditionError("the workspace has no training images");
  model::ClassifierOptions o;
  o.device = options.device;
  o.seed = options.seed;
  ASSIGN_OR_RETURN(auto m, model::Classifier::Create(spec, o));
  model::TrainOptions to;
  to.epochs = options.epochs;
  to.batch_size = options.batch_size;
  to.learning_rate = options.learning_rate;
  to.seed = options.seed;
  ASSIGN_OR_RETURN(model::TrainResult r, m->Train(*train, *val, to, progress));
  RETURN_IF_ERROR(m->SaveBackbone(options.out));
  PretrainResult out;
  out.path = options.out;
  ASSIGN_OR_RETURN(out.sha256, Sha256FileHex(options.out));
  out.best_val_auroc = r.best_val_auroc;
  return out;
}

}  // namespace fedtune::site
