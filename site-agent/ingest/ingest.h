// Ingest: a folder of DICOM files (a PACS export) -> filtered, de-identified,
// decoded, resized, labelled and split images in a site workspace:
//   <workspace>/site.key         the HMAC key (0600, created on first use)
//   <workspace>/index.sqlite     images (pseudonymous ids, split, labels,
//                                where the pixels are) and quarantine reasons
//   <workspace>/cache/shard-NNNNN.u8   pixels, size x size uint8 per image,
//                                appended; memory-mappable (.u16: uint16
//                                little-endian, with cache_bits = 16)
//   <workspace>/deid/<image>.dcm de-identified DICOM copies (optional)
// Re-running skips files already ingested or quarantined (by content hash;
// quarantined ones are tried again on request).
//   <workspace>/ingest.lock      held by the process ingesting (one at a time)
// Nothing identifying is stored: no paths, names or original UIDs. (The DICOM
// receiver's <workspace>/incoming, when used, holds received files only until
// they are ingested; see site-agent/dicom_scp.)
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "site-agent/dataset/labels.h"
#include "site-agent/dataset/patient_split.h"
#include "site-agent/ingest/deid_profile.h"
#include "site-agent/ingest/filters.h"
#include "site-agent/ingest/pixels.h"

namespace fedtune::ingest {

// How a labels row is matched to a file: the file name without extension
// (VinDr image_id), SOPInstanceUID or AccessionNumber.
enum class LabelKey { kFileStem, kSopInstanceUid, kAccessionNumber };

struct IngestOptions {
  std::string workspace;
  FilterOptions filters;
  DeidOptions deid;
  int image_size = 518;
  FitMode fit = FitMode::kPad;
  // Bits per cached pixel: 8 (uint8, 1 byte) or 16 (uint16, the full
  // presentation range, 2 bytes). One value per workspace.
  int cache_bits = 8;
  int threads = 0;  // 0 = every usable core
  bool keep_deid_copies = true;
  // Labels (optional): without a file every label is unknown.
  std::string labels_path;
  dataset::LabelOptions labels;
  LabelKey label_key = LabelKey::kFileStem;
  dataset::SplitRatios split;
  uint64_t split_seed = 0;
  // Try files recorded as quarantined again (labels added since, filters
  // changed); by default they count as done.
  bool retry_quarantined = false;
};

struct IngestSummary {
  int scanned = 0;
  int ingested = 0;
  int already_done = 0;  // skipped: ingested or quarantined by an earlier run
  int quarantined = 0;
  std::map<std::string, int> quarantine_reasons;  // reason name -> count (this run)
  double seconds = 0;
};

// Called after each file, from the worker threads but never two at once.
using IngestProgress = std::function<void(int done, int total)>;

enum class IngestOutcome { kIngested, kAlreadyDone, kQuarantined };

// One ingest session on a workspace: the site key, the labels and the index
// opened once, then any number of files, from any number of threads. Holds
// the workspace's ingest lock (<workspace>/ingest.lock) until destroyed, so
// two processes never append to the same cache at once.
class Ingestor {
 public:
  // `on_wait` is called once when another process holds the lock (then
  // Open waits for it).
  static absl::StatusOr<std::unique_ptr<Ingestor>> Open(const IngestOptions& options,
                                                        const std::function<void()>& on_wait = {});
  ~Ingestor();
  Ingestor(const Ingestor&) = delete;
  Ingestor& operator=(const Ingestor&) = delete;

  // Filters, de-identifies, decodes and stores one file, or records why not
  // (the outcome). An error is a problem of this site (disk full, index),
  // never of the file.
  absl::StatusOr<IngestOutcome> IngestFile(const std::string& path);
  // IngestFile over `files` on `threads` threads (0: every core). `done` is
  // called after each file with its index and outcome, never two at once.
  // Stops at, and returns, the first site-side error.
  absl::Status IngestFiles(const std::vector<std::string>& files, int threads,
                           const std::function<void(size_t index, IngestOutcome outcome)>& done);
  // Makes everything ingested so far durable (also done every 256 files).
  absl::Status Commit();
  // Counts since Open (scanned stays 0: the caller knows what it offered).
  IngestSummary Summary() const;

 private:
  struct State;
  explicit Ingestor(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// The file name of cache shard `shard` in a workspace of `cache_bits`.
std::string CacheShardName(int64_t shard, int cache_bits);

// Ingests every regular file under `source_dir` (recursively).
absl::StatusOr<IngestSummary> IngestDirectory(const std::string& source_dir, const IngestOptions& options,
                                              const IngestProgress& progress = {});

}  // namespace fedtune::ingest
