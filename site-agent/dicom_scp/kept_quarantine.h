// Raw files the DICOM receiver kept after ingest quarantined them
// ([scp] keep_quarantined, off by default): they are identifiable, so they
// live in <incoming>/quarantine (mode 0700), are purged after
// quarantine_retention_days (at start-up and while the receiver runs), and
// `fedtune-site quarantine list | purge` shows and removes them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::scp {

// <incoming_dir>/quarantine
std::string KeptQuarantineDir(const std::string& incoming_dir);

struct KeptFile {
  std::string name;      // the receiver's file name (no patient data)
  int64_t bytes = 0;
  double age_days = 0;   // since it was kept
  std::string reason;    // as ingest recorded it ("modality", ...); "" when the index has no record
  std::string detail;
};

// The kept files, oldest first, with the reasons from `workspace`'s index
// (matched by content hash). An absent folder is an empty list.
absl::StatusOr<std::vector<KeptFile>> ListKeptQuarantine(const std::string& incoming_dir,
                                                         const std::string& workspace);

// Deletes kept files older than `older_than_days` (0: all of them); returns
// how many. The folder is (re)made 0700 when it exists.
absl::StatusOr<int> PurgeKeptQuarantine(const std::string& incoming_dir, double older_than_days);

// Moves `file` into the kept folder (created 0700).
absl::Status KeepQuarantined(const std::string& incoming_dir, const std::string& file);

}  // namespace fedtune::scp
