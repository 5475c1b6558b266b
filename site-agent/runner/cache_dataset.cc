#include "site-agent/runner/cache_dataset.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/core/status.h"
#include "site-agent/dataset/patient_split.h"
#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/workspace_index.h"

namespace fedtune::site {

absl::StatusOr<std::unique_ptr<CacheDataset>> CacheDataset::Open(const std::string& workspace,
                                                                  const CacheDatasetOptions& options) {
  ASSIGN_OR_RETURN(ingest::IndexMeta meta, ingest::ReadIndexMeta(workspace));
  std::unique_ptr<CacheDataset> out(new CacheDataset());
  out->side_ = meta.image_size;
  out->bits_ = meta.cache_bits;
  if (out->side_ <= 0) return absl::DataLossError("index: no image_size recorded");
  ASSIGN_OR_RETURN(std::vector<ingest::IndexedImage> images, ingest::ReadIndexedImages(workspace, options.as_of));
  // A finding the workspace labels now, or had labels for at the snapshot
  // (a running job keeps its findings through labels import --findings-changed).
  std::set<std::string> labelled(meta.findings.begin(), meta.findings.end());
  if (options.as_of >= 0) {
    for (const auto& im : images) {
      for (const auto& [f, v] : im.labels) labelled.insert(f);
    }
  }
  for (const auto& f : options.findings) {
    if (!labelled.count(f)) {
      return absl::FailedPreconditionError(absl::StrCat("this site has no labels for finding \"", f, "\" (it has: ",
                                                        absl::StrJoin(meta.findings, ", "), ")"));
    }
  }
  out->num_findings_ = options.findings.size();
  const auto balance_it =
      std::find(options.findings.begin(), options.findings.end(), options.balance_finding);
  if (options.balance > 0 && balance_it == options.findings.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("balance finding \"", options.balance_finding, "\" is not one of the job's findings"));
  }

  struct Row {
    std::vector<float> labels;
    int64_t shard;
    uint64_t offset;
  };
  std::map<std::string, Row> rows;  // by pseudonymous image id
  for (const auto& im : images) {
    if (im.split != options.split) continue;
    Row r{{}, im.shard, im.offset};
    bool any = false;
    for (const auto& f : options.findings) {
      auto it = im.labels.find(f);
      r.labels.push_back(it == im.labels.end() ? -1.0f : it->second);
      any = any || it != im.labels.end();
    }
    if (options.labelled_only && !any) continue;
    rows.emplace(im.image_id, std::move(r));
  }

  std::vector<std::string> chosen;
  if (options.max_images > 0) {
    std::vector<dataset::Candidate> candidates;
    const size_t bf = static_cast<size_t>(balance_it - options.findings.begin());
    for (const auto& [id, r] : rows) {
      candidates.push_back({id, options.balance > 0 && r.labels[bf] == 1.0f});
    }
    chosen = dataset::NestedSubset(candidates, options.max_images, options.subset_seed, options.balance);
  } else {
    for (const auto& [id, r] : rows) chosen.push_back(id);
  }
  std::map<int64_t, size_t> shard_slot;
  for (const auto& id : chosen) {
    const Row& r = rows.at(id);
    auto [it, added] = shard_slot.emplace(r.shard, out->shards_.size());
    if (added) {
      ASSIGN_OR_RETURN(MappedFile f, MappedFile::Open(workspace + "/cache/" + ingest::CacheShardName(r.shard, out->bits_)));
      out->shards_.push_back(std::move(f));
    }
    const uint64_t bytes = static_cast<uint64_t>(out->side_) * static_cast<uint64_t>(out->side_) *
                           static_cast<uint64_t>(out->bits_ / 8);
    if (r.offset + bytes > out->shards_[it->second].bytes().size()) {
      return absl::DataLossError(absl::StrCat("cache shard ", r.shard, " is shorter than the index says"));
    }
    out->items_.push_back({it->second, r.offset});
    out->image_ids_.push_back(id);
    out->labels_.insert(out->labels_.end(), r.labels.begin(), r.labels.end());
  }
  return out;
}

absl::Status CacheDataset::Get(size_t index, std::span<float> pixels, std::span<float> labels) const {
  if (index >= items_.size()) return absl::OutOfRangeError("image index out of range");
  const size_t n = static_cast<size_t>(side_) * static_cast<size_t>(side_);
  if (pixels.size() != n) return absl::InvalidArgumentError("pixel buffer has the wrong size");
  if (bits_ == 16) {
    const auto bytes = shards_[items_[index].shard].bytes().subspan(items_[index].offset, 2 * n);
    for (size_t i = 0; i < n; ++i) {
      const unsigned v = std::to_integer<unsigned>(bytes[2 * i]) | (std::to_integer<unsigned>(bytes[2 * i + 1]) << 8);
      pixels[i] = static_cast<float>(v) / 65535.0f;
    }
  } else {
    const auto bytes = shards_[items_[index].shard].bytes().subspan(items_[index].offset, n);
    for (size_t i = 0; i < n; ++i) pixels[i] = static_cast<float>(std::to_integer<uint8_t>(bytes[i])) / 255.0f;
  }
  return GetLabels(index, labels);
}

absl::Status CacheDataset::GetLabels(size_t index, std::span<float> labels) const {
  if (index >= items_.size()) return absl::OutOfRangeError("image index out of range");
  if (labels.size() != num_findings_) return absl::InvalidArgumentError("label buffer has the wrong size");
  std::copy_n(labels_.begin() + static_cast<ptrdiff_t>(index * num_findings_), num_findings_, labels.begin());
  return absl::OkStatus();
}

}  // namespace fedtune::site
