// One split of a site workspace (what `fedtune-site ingest` wrote) as an
// ImageDataset for the trainer: labels by finding name from index.sqlite
// (as of a job's snapshot), pixels memory-mapped from the cache shards
// (uint8 or uint16) and scaled to 0..1. Torch-free.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/core/file_io.h"
#include "common/model/dataset.h"

namespace fedtune::site {

struct CacheDatasetOptions {
  std::string split = "train";  // "train", "val" or "test"
  // The job's findings, in the job's order; each must be among the
  // workspace's labelled findings. A label the index does not know is -1
  // (masked), never 0.
  std::vector<std::string> findings;
  // The data sequence number to read as of (a job's snapshot,
  // workspace_index.h); < 0: everything.
  int64_t as_of = -1;
  // Leave out images with no known label for any of the findings (training:
  // they would add nothing to the loss but count as examples).
  bool labelled_only = false;
  // Training subset: at most this many images (0 = all), chosen as nested
  // subsets (dataset::NestedSubset), so a larger cap contains a smaller one.
  int64_t max_images = 0;
  uint64_t subset_seed = 0;
  // With a cap: draw positives of `balance_finding` and negatives 1 : balance
  // (0 = no balancing).
  double balance = 0;
  std::string balance_finding;
};

class CacheDataset final : public model::ImageDataset {
 public:
  // NOT_FOUND when the workspace has no index (run ingest first);
  // FAILED_PRECONDITION when a finding has no labels at this site.
  static absl::StatusOr<std::unique_ptr<CacheDataset>> Open(const std::string& workspace,
                                                            const CacheDatasetOptions& options);

  size_t size() const override { return items_.size(); }
  int height() const override { return side_; }
  int width() const override { return side_; }
  size_t num_findings() const override { return num_findings_; }
  absl::Status Get(size_t index, std::span<float> pixels, std::span<float> labels) const override;
  absl::Status GetLabels(size_t index, std::span<float> labels) const override;
  // The pseudonymous image ids, in the dataset's order (stay at the site).
  const std::vector<std::string>& image_ids() const { return image_ids_; }

 private:
  struct Item {
    size_t shard;
    uint64_t offset;
  };
  CacheDataset() = default;
  int side_ = 0;
  int bits_ = 8;  // cached pixels: uint8, or uint16 little-endian
  size_t num_findings_ = 0;
  std::vector<Item> items_;
  std::vector<std::string> image_ids_;
  std::vector<float> labels_;  // items x findings
  std::vector<MappedFile> shards_;
};

}  // namespace fedtune::site
