#include "site-agent/inference/serving_model.h"

#include <algorithm>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/core/status.h"
#include "common/fl/task_spec.h"
#include "common/model/dataset.h"

namespace fedtune::site {

ServingModel::~ServingModel() = default;

absl::StatusOr<std::shared_ptr<const ServingModel>> ServingModel::Load(const HeldModel& held,
                                                                       const ServingModelOptions& options) {
  const v1::Promotion& p = held.served.promotion();
  const v1::EvaluateTask& m = held.served.model();
  if (m.backbone_sha256() != options.backbone_sha256) {
    return absl::FailedPreconditionError(absl::StrCat(
        "job ", p.job_id(), " version ", p.version(), " needs base weights with SHA-256 ",
        m.backbone_sha256().substr(0, 16), ", this site's [training] backbone has ",
        options.backbone_sha256.substr(0, 16)));
  }
  ASSIGN_OR_RETURN(model::ModelSpec spec, fl::ModelSpecFor(m.backbone_architecture(), m.config()));
  ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(held.weights_path));
  if (Sha256Hex(bytes) != p.sha256()) {
    return absl::DataLossError(absl::StrCat(held.weights_path, " does not match the promotion's SHA-256"));
  }
  ASSIGN_OR_RETURN(SafetensorsFile weights, SafetensorsFile::FromBytes(bytes));
  model::ClassifierOptions co;
  co.device = options.device;
  co.threads = options.threads;
  co.backbone_path = options.backbone_path;
  ASSIGN_OR_RETURN(std::unique_ptr<model::Classifier> classifier, model::Classifier::Create(spec, co));
  RETURN_IF_ERROR(classifier->SetGlobalState(weights.ReadAll()));

  std::shared_ptr<ServingModel> out(new ServingModel());
  out->promotion_ = p;
  out->findings_ = spec.findings;
  std::map<std::string, double> chosen;
  for (const v1::FindingThreshold& t : p.thresholds()) chosen[t.finding()] = t.threshold();
  for (const std::string& f : out->findings_) out->thresholds_.push_back(chosen.count(f) ? chosen[f] : 0.5);
  out->image_size_ = spec.vit.image_size;
  out->device_ = classifier->device();
  out->classifier_ = std::move(classifier);
  return std::shared_ptr<const ServingModel>(std::move(out));
}

absl::StatusOr<std::vector<float>> ServingModel::Run(std::span<const float> images, int n, int side) const {
  const size_t per_image = static_cast<size_t>(side) * side;
  if (images.size() != per_image * static_cast<size_t>(n)) {
    return absl::InvalidArgumentError(absl::StrCat("expected ", n, " images of ", side, "x", side));
  }
  model::InMemoryDataset data(side, side, findings_.size());
  const std::vector<float> no_labels(findings_.size(), -1.0f);
  for (int i = 0; i < n; ++i) RETURN_IF_ERROR(data.Add(images.subspan(i * per_image, per_image), no_labels));
  // In slices of at most 32 images: the model resizes and runs one slice at a time.
  ASSIGN_OR_RETURN(std::vector<double> probs, classifier_->Predict(data, std::min(n, 32)));
  return std::vector<float>(probs.begin(), probs.end());
}

}  // namespace fedtune::site
