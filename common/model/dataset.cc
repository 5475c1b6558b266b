#include "common/model/dataset.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace fedtune::model {

absl::Status InMemoryDataset::Add(std::span<const float> pixels, std::span<const float> labels) {
  if (pixels.size() != static_cast<size_t>(height_) * static_cast<size_t>(width_) ||
      labels.size() != num_findings_) {
    return absl::InvalidArgumentError(absl::StrCat("image of ", pixels.size(), " pixels and ", labels.size(),
                                                   " labels; the dataset holds ", height_, "x", width_, " images with ",
                                                   num_findings_, " labels"));
  }
  pixels_.insert(pixels_.end(), pixels.begin(), pixels.end());
  labels_.insert(labels_.end(), labels.begin(), labels.end());
  return absl::OkStatus();
}

absl::Status InMemoryDataset::Get(size_t index, std::span<float> pixels, std::span<float> labels) const {
  const size_t n = static_cast<size_t>(height_) * static_cast<size_t>(width_);
  if (index >= size() || pixels.size() != n || labels.size() != num_findings_) {
    return absl::OutOfRangeError(absl::StrCat("image ", index, " of ", size()));
  }
  std::copy_n(pixels_.begin() + static_cast<std::ptrdiff_t>(index * n), n, pixels.begin());
  std::copy_n(labels_.begin() + static_cast<std::ptrdiff_t>(index * num_findings_), num_findings_, labels.begin());
  return absl::OkStatus();
}

absl::Status ImageDataset::GetLabels(size_t index, std::span<float> labels) const {
  std::vector<float> pixels(static_cast<size_t>(height()) * static_cast<size_t>(width()));
  return Get(index, pixels, labels);
}

absl::Status InMemoryDataset::GetLabels(size_t index, std::span<float> labels) const {
  if (index >= size() || labels.size() != num_findings_) {
    return absl::OutOfRangeError(absl::StrCat("image ", index, " of ", size()));
  }
  std::copy_n(labels_.begin() + static_cast<std::ptrdiff_t>(index * num_findings_), num_findings_, labels.begin());
  return absl::OkStatus();
}

}  // namespace fedtune::model
