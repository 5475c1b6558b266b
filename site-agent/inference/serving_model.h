// The promoted model as the inference service runs it: the site's backbone,
// the global version's weights (the files workspace/models/ holds, see
// served_model.h) and the thresholds chosen on the federation's validation
// data. Torch-free header; immutable once loaded, so a new promotion loads a
// new ServingModel while requests still finish on the old one.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model/classifier.h"
#include "fedtune/v1/common.pb.h"
#include "site-agent/inference/batcher.h"
#include "site-agent/inference/served_model.h"

namespace fedtune::site {

struct ServingModelOptions {
  std::string backbone_path;    // the site's [training] backbone
  std::string backbone_sha256;  // its SHA-256 (hashed once by the caller)
  std::string device = "auto";
  int threads = 0;
};

class ServingModel final : public BatchModel {
 public:
  // FAILED_PRECONDITION when the model needs another backbone than the
  // site's; the weights file is checked against the promotion's SHA-256.
  static absl::StatusOr<std::shared_ptr<const ServingModel>> Load(const HeldModel& held,
                                                                  const ServingModelOptions& options);
  ~ServingModel() override;

  const v1::Promotion& promotion() const { return promotion_; }
  const std::vector<std::string>& findings() const { return findings_; }
  // Per finding: probability >= threshold is positive (0.5 where the
  // promotion holds none).
  const std::vector<double>& thresholds() const { return thresholds_; }
  const std::string& device() const { return device_; }

  // BatchModel: images -> probabilities [n x findings]; images of another
  // side than the model's input are resized as training resizes them.
  int image_size() const override { return image_size_; }
  int num_outputs() const override { return static_cast<int>(findings_.size()); }
  absl::StatusOr<std::vector<float>> Run(std::span<const float> images, int n, int side) const override;

 private:
  ServingModel() = default;
  std::unique_ptr<model::Classifier> classifier_;
  v1::Promotion promotion_;
  std::vector<std::string> findings_;
  std::vector<double> thresholds_;
  std::string device_;
  int image_size_ = 0;
};

}  // namespace fedtune::site
