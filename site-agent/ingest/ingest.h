// Ingest: a folder of DICOM files (a PACS export) -> filtered, de-identified,
// decoded, resized, labelled and split images in a site workspace:
//   <workspace>/site.key         the HMAC key (0600, created on first use)
//   <workspace>/index.sqlite     images (pseudonymous ids, split, labels,
//                                where the pixels are) and quarantine reasons
//   <workspace>/cache/shard-NNNNN.u8   pixels, size x size uint8 per image,
//                                appended; memory-mappable (.u16: uint16
//                                little-endian, with cache_bits = 16)
//   <workspace>/deid/<image>.dcm de-identified DICOM copies (optional)
// Re-running skips files already ingested or quarantined (by content hash).
// Nothing identifying is stored: no paths, names or original UIDs.
#pragma once

#include <functional>
#include <map>
#include <string>

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

// The file name of cache shard `shard` in a workspace of `cache_bits`.
std::string CacheShardName(int64_t shard, int cache_bits);

// Ingests every regular file under `source_dir` (recursively).
absl::StatusOr<IngestSummary> IngestDirectory(const std::string& source_dir, const IngestOptions& options,
                                              const IngestProgress& progress = {});

}  // namespace fedtune::ingest
