#include "site-agent/dicom_scp/kept_quarantine.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/core/hashing.h"
#include "common/core/status.h"
#include "site-agent/ingest/workspace_index.h"

namespace fedtune::scp {
namespace {

namespace fs = std::filesystem;

double AgeDays(const fs::path& p) {
  std::error_code ec;
  const auto written = fs::last_write_time(p, ec);
  if (ec) return 0;
  return std::chrono::duration<double>(fs::file_time_type::clock::now() - written).count() / 86400.0;
}

}  // namespace

std::string KeptQuarantineDir(const std::string& incoming_dir) { return (fs::path(incoming_dir) / "quarantine").string(); }

absl::StatusOr<std::vector<KeptFile>> ListKeptQuarantine(const std::string& incoming_dir,
                                                         const std::string& workspace) {
  std::vector<KeptFile> out;
  const fs::path dir = KeptQuarantineDir(incoming_dir);
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  std::map<std::string, ingest::QuarantineRecord> records;
  if (auto r = ingest::ReadQuarantineRecords(workspace); r.ok()) records = std::move(*r);
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    KeptFile k;
    k.name = e.path().filename().string();
    k.bytes = static_cast<int64_t>(e.file_size(ec));
    k.age_days = AgeDays(e.path());
    ASSIGN_OR_RETURN(const std::string sha, Sha256FileHex(e.path().string()));
    if (auto it = records.find(sha); it != records.end()) {
      k.reason = it->second.reason;
      k.detail = it->second.detail;
    }
    out.push_back(std::move(k));
  }
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot read ", dir.string(), ": ", ec.message()));
  std::sort(out.begin(), out.end(), [](const KeptFile& a, const KeptFile& b) { return a.age_days > b.age_days; });
  return out;
}

absl::StatusOr<int> PurgeKeptQuarantine(const std::string& incoming_dir, double older_than_days) {
  const fs::path dir = KeptQuarantineDir(incoming_dir);
  std::error_code ec;
  if (!fs::exists(dir, ec)) return 0;
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  int removed = 0;
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file() && (older_than_days <= 0 || AgeDays(e.path()) > older_than_days)) doomed.push_back(e.path());
  }
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot read ", dir.string(), ": ", ec.message()));
  for (const auto& p : doomed) {
    if (fs::remove(p, ec)) ++removed;
    if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot remove ", p.string(), ": ", ec.message()));
  }
  return removed;
}

absl::Status KeepQuarantined(const std::string& incoming_dir, const std::string& file) {
  const fs::path dir = KeptQuarantineDir(incoming_dir);
  std::error_code ec;
  fs::create_directories(dir, ec);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  const fs::path to = dir / fs::path(file).filename();
  fs::rename(file, to, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot keep ", file, ": ", ec.message()));
  // Its age counts from now: the retention clock starts when it is kept.
  fs::last_write_time(to, fs::file_time_type::clock::now(), ec);
  return absl::OkStatus();
}

}  // namespace fedtune::scp
