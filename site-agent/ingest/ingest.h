// Ingest: a folder of DICOM files (a PACS export) -> filtered, de-identified,
// decoded, resized, labelled and split images in a site workspace:
//   <workspace>/site.key         the HMAC key (0600, created on first use)
//   <workspace>/index.sqlite     images (pseudonymous ids, split, where the
//                                pixels are), labels by finding name (with
//                                their history, see workspace_index.h),
//                                keyed HMACs of label keys, quarantine reasons
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
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "site-agent/dataset/labels.h"
#include "site-agent/dataset/patient_split.h"
#include "site-agent/ingest/burned_in.h"
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
  // Text in the pixels of images whose BurnedInAnnotation is not NO:
  // quarantined (default), blacked out, or not looked for.
  BurnedInOptions burned_in;
  int image_size = 518;
  FitMode fit = FitMode::kPad;
  // Bits per cached pixel: 8 (uint8, 1 byte) or 16 (uint16, the full
  // presentation range, 2 bytes). One value per workspace.
  int cache_bits = 8;
  int threads = 0;  // 0 = every usable core
  bool keep_deid_copies = true;
  // Labels (optional): without a file the images are stored unlabelled
  // (every label unknown: masked, never a negative) and labelled later with
  // `fedtune-site labels import`.
  std::string labels_path;
  dataset::LabelOptions labels;
  LabelKey label_key = LabelKey::kFileStem;
  // Whether a file's name (stem) can key its labels (folder ingest); files
  // received over DICOM carry names of the receiver's making.
  bool file_stem_is_key = true;
  // The labelled findings are pinned per workspace (as a set: labels are
  // kept by name); true accepts a different set (labels import
  // --findings-changed).
  bool replace_findings = false;
  // The split seed and ratios are pinned per workspace; true re-splits every
  // patient with these (fedtune-site split --resplit).
  dataset::SplitRatios split;
  uint64_t split_seed = 0;
  bool resplit = false;
  // Try files recorded as quarantined again (labels added since, filters
  // changed); by default they count as done.
  bool retry_quarantined = false;
};

struct IngestSummary {
  int scanned = 0;
  int ingested = 0;
  int already_done = 0;  // skipped: ingested or quarantined by an earlier run
  int quarantined = 0;
  int unlabelled = 0;       // ingested without a labels file
  int redacted = 0;         // ingested with text found in the pixels blacked out
  int labels_updated = 0;   // already ingested images whose labels the labels file changed
  std::map<std::string, int> quarantine_reasons;  // reason name -> count (this run)
  double seconds = 0;
};

// Called after each file, from the worker threads but never two at once.
using IngestProgress = std::function<void(int done, int total)>;

enum class IngestOutcome { kIngested, kAlreadyDone, kQuarantined };

// What joining a labels file to the images already in a workspace did.
struct LabelImportSummary {
  int rows = 0;                    // rows (keys) in the labels file
  int matched = 0;                 // rows whose key names an image of the workspace
  int not_matched = 0;             // rows naming no image here (not ingested, or quarantined)
  int changed = 0;                 // images whose labels changed
  int unchanged = 0;               // matched images whose labels were already these
  int64_t images_without_row = 0;  // images of the workspace the file does not mention
};

struct ResplitSummary {
  int64_t patients = 0;
  int64_t patients_moved = 0;
  int64_t images_moved = 0;
};

// "file_stem", "sop_instance_uid", "accession_number".
std::string_view LabelKeyName(LabelKey kind);
// The keyed HMAC under which the index remembers a label key of an image.
std::string LabelKeyHmac(std::span<const uint8_t> site_key, LabelKey kind, std::string_view value);

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
  // Joins the session's labels file to every image already in the workspace,
  // by the key [labels] names (recorded at ingest as a keyed HMAC; for
  // SOPInstanceUID also the pseudonymous UID itself): changed labels are
  // recorded with a new data sequence number, so a running job keeps the
  // ones it started with. FAILED_PRECONDITION without a labels file.
  absl::StatusOr<LabelImportSummary> ImportLabels();
  // Assigns every patient the split of the session's seed and ratios (opened
  // with resplit = true) and pins them.
  absl::StatusOr<ResplitSummary> Resplit();
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

// Ingests every regular file under `source_dir` (recursively). With a
// labels file, also applies it to the images ingested before
// (IngestSummary::labels_updated).
absl::StatusOr<IngestSummary> IngestDirectory(const std::string& source_dir, const IngestOptions& options,
                                              const IngestProgress& progress = {});

}  // namespace fedtune::ingest
