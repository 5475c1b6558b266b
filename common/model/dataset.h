// Labelled single-channel images as the trainer sees them. Torch-free.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "absl/status/status.h"

namespace fedtune::model {

// Label values: 1 positive, 0 negative, anything else (conventionally -1)
// unknown: left out of the loss and the metrics for that finding.
class ImageDataset {
 public:
  virtual ~ImageDataset() = default;
  virtual size_t size() const = 0;
  virtual int height() const = 0;
  virtual int width() const = 0;
  virtual size_t num_findings() const = 0;
  // Writes image `index` (height x width, row-major, values in [0, 1]) into
  // `pixels` and its labels into `labels`. Must be safe to call from several
  // threads at once.
  virtual absl::Status Get(size_t index, std::span<float> pixels, std::span<float> labels) const = 0;
  // Labels only; the default reads the whole image, datasets that hold labels
  // apart should answer without touching pixels.
  virtual absl::Status GetLabels(size_t index, std::span<float> labels) const;
};

// Images held in memory (tests, synthetic data, small validation sets).
class InMemoryDataset final : public ImageDataset {
 public:
  InMemoryDataset(int height, int width, size_t num_findings)
      : height_(height), width_(width), num_findings_(num_findings) {}
  // INVALID_ARGUMENT when the sizes do not match the dataset's.
  absl::Status Add(std::span<const float> pixels, std::span<const float> labels);

  size_t size() const override { return labels_.size() / num_findings_; }
  int height() const override { return height_; }
  int width() const override { return width_; }
  size_t num_findings() const override { return num_findings_; }
  absl::Status Get(size_t index, std::span<float> pixels, std::span<float> labels) const override;
  absl::Status GetLabels(size_t index, std::span<float> labels) const override;

 private:
  int height_, width_;
  size_t num_findings_;
  std::vector<float> pixels_;
  std::vector<float> labels_;
};

}  // namespace fedtune::model
