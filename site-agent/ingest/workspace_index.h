// Reading a site workspace's index (<workspace>/index.sqlite, written by
// ingest): the images, their split, and their labels by finding name, as of
// a data sequence number.
//
// Every ingest commit and every labels import takes the next data sequence
// number (meta 'data_seq'): images record the number they arrived with, and
// labels are kept as a history of (image, finding, value, number). A job
// pins the number current when its first task reaches the site
// (TakeJobSnapshot), so every task of the job sees the same images and
// labels, and images that arrive while it runs join the next job.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::ingest {

struct IndexMeta {
  int image_size = 0;
  int cache_bits = 8;
  std::vector<std::string> findings;  // the labelled findings, as pinned at the first labelled ingest
  std::string split;                  // the pinned split settings ("seed=0 train=0.7 val=0.1 test=0.2"), or ""
  int64_t data_seq = 0;               // the last committed data sequence number
};

struct IndexedImage {
  std::string image_id;  // pseudonymous
  std::string patient;   // pseudonymous
  std::string split;     // "train", "val", "test"
  int64_t shard = 0;
  uint64_t offset = 0;
  int64_t added_seq = 0;
  // finding name -> 1 (positive) or 0 (negative); a finding without a known
  // label is absent (masked in training and metrics, never a negative).
  std::map<std::string, float> labels;
};

// Runs SQLite's quick_check on the workspace's index (OK when there is none
// yet): DATA_LOSS, with what to do, when it is damaged. A workspace found
// sound is not checked again by the same process (the daemon checks at
// start; its receiver opens an ingest session per batch of arrivals).
absl::Status CheckWorkspaceIndex(const std::string& workspace);

// NOT_FOUND when the workspace has no index (run ingest first).
absl::StatusOr<IndexMeta> ReadIndexMeta(const std::string& workspace);

// The images that had arrived by data sequence number `as_of` (< 0: every
// image), with their labels as of that number, ordered by image id.
absl::StatusOr<std::vector<IndexedImage>> ReadIndexedImages(const std::string& workspace, int64_t as_of = -1);

// The data sequence number `job_id` trains and evaluates on: recorded the
// first time the job asks (the current one then), the same ever after.
absl::StatusOr<int64_t> TakeJobSnapshot(const std::string& workspace, const std::string& job_id);

struct JobSnapshot {
  std::string job_id;
  int64_t data_seq = 0;
  int64_t created_ms = 0;
};
// Why files were quarantined, by the SHA-256 of their content (hex):
// reason name and detail (filters.h; no patient data).
struct QuarantineRecord {
  std::string reason;
  std::string detail;
};
absl::StatusOr<std::map<std::string, QuarantineRecord>> ReadQuarantineRecords(const std::string& workspace);

// The most recent job snapshots, newest first.
absl::StatusOr<std::vector<JobSnapshot>> RecentJobSnapshots(const std::string& workspace, int limit = 5);

}  // namespace fedtune::ingest
