#include "site-agent/runner/cache_dataset.h"

#include <cstdio>
#include <filesystem>
#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/core/sqlite_db.h"
#include "common/core/status.h"
#include "site-agent/dataset/patient_split.h"
#include "site-agent/ingest/ingest.h"

namespace fedtune::site {

absl::StatusOr<std::unique_ptr<CacheDataset>> CacheDataset::Open(const std::string& workspace,
                                                                  const CacheDatasetOptions& options) {
  const std::string index = workspace + "/index.sqlite";
  if (!std::filesystem::exists(index)) {
    return absl::NotFoundError(absl::StrCat("no index in workspace ", workspace, " (run fedtune-site ingest first)"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SqliteDb> db, SqliteDb::Open(index));
  std::unique_ptr<CacheDataset> out(new CacheDataset());
  std::vector<std::string> site_findings;
  {
    ASSIGN_OR_RETURN(SqliteStatement s, db->Prepare("SELECT key, value FROM meta"));
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      if (s.Text(0) == "image_size") {
        if (!absl::SimpleAtoi(s.Text(1), &out->side_)) return absl::DataLossError("index: bad image_size");
      } else if (s.Text(0) == "cache_bits") {
        if (!absl::SimpleAtoi(s.Text(1), &out->bits_) || (out->bits_ != 8 && out->bits_ != 16)) {
          return absl::DataLossError("index: bad cache_bits");
        }
      } else if (s.Text(0) == "findings" && !s.Text(1).empty()) {
        site_findings = absl::StrSplit(s.Text(1), '\x1f');
      }
    }
  }
  std::vector<size_t> column;
  for (const auto& f : options.findings) {
    auto it = std::find(site_findings.begin(), site_findings.end(), f);
    if (it == site_findings.end()) {
      return absl::FailedPreconditionError(absl::StrCat("this site has no labels for finding \"", f, "\" (it has: ",
                                                        absl::StrJoin(site_findings, ", "), ")"));
    }
    column.push_back(static_cast<size_t>(it - site_findings.begin()));
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
  ASSIGN_OR_RETURN(SqliteStatement s,
                   db->Prepare("SELECT image_id, labels, shard, offset FROM images WHERE split = ? ORDER BY image_id"));
  s.Bind(1, options.split);
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    std::string text = s.Text(1);
    if (text.size() >= 2) text = text.substr(1, text.size() - 2);
    std::vector<float> all;
    for (absl::string_view v : absl::StrSplit(text, ',', absl::SkipEmpty())) {
      float x = 0;
      if (!absl::SimpleAtof(v, &x)) return absl::DataLossError("index: unreadable labels");
      all.push_back(x);
    }
    Row r{{}, s.Int(2), static_cast<uint64_t>(s.Int(3))};
    for (size_t c : column) r.labels.push_back(c < all.size() ? all[c] : -1.0f);
    rows.emplace(s.Text(0), std::move(r));
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
