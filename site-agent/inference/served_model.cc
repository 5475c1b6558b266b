#include "site-agent/inference/served_model.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/status.h"

namespace fedtune::site {
namespace {

namespace fs = std::filesystem;

std::string Dir(const std::string& workspace) { return workspace + "/models"; }
std::string Weights(const std::string& workspace, const std::string& which) {
  return absl::StrCat(Dir(workspace), "/", which, ".safetensors");
}
std::string Description(const std::string& workspace, const std::string& which) {
  return absl::StrCat(Dir(workspace), "/", which, ".pb");
}

absl::Status Rename(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot move ", from, " to ", to, ": ", ec.message()));
  return absl::OkStatus();
}

// current -> previous (both files), when there is a current.
absl::Status ShiftCurrent(const std::string& workspace) {
  if (!fs::exists(Description(workspace, "current"))) return absl::OkStatus();
  RETURN_IF_ERROR(Rename(Weights(workspace, "current"), Weights(workspace, "previous")));
  return Rename(Description(workspace, "current"), Description(workspace, "previous"));
}

}  // namespace

absl::StatusOr<std::optional<HeldModel>> LoadHeldModel(const std::string& workspace, const std::string& which) {
  const std::string desc = Description(workspace, which);
  if (!fs::exists(desc) || !fs::exists(Weights(workspace, which))) return std::optional<HeldModel>();
  ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(desc));
  HeldModel m;
  if (!m.served.ParseFromString(bytes)) return absl::DataLossError(absl::StrCat(desc, " does not parse"));
  m.weights_path = Weights(workspace, which);
  return std::optional<HeldModel>(std::move(m));
}

absl::Status InstallServedModel(const std::string& workspace, const v1::ServedModel& served,
                                const std::string& weights) {
  if (Sha256Hex(weights) != served.promotion().sha256()) {
    return absl::DataLossError("the promoted model's SHA-256 does not match its weights");
  }
  std::error_code ec;
  fs::create_directories(Dir(workspace), ec);
  fs::permissions(Dir(workspace), fs::perms::owner_all, fs::perm_options::replace, ec);
  // The new files first (under temporary names), so a crash leaves the old
  // current model whole.
  const std::string tmp_weights = Weights(workspace, "incoming");
  const std::string tmp_desc = Description(workspace, "incoming");
  RETURN_IF_ERROR(WriteFileAtomically(tmp_weights, weights, 0600));
  RETURN_IF_ERROR(WriteFileAtomically(tmp_desc, served.SerializeAsString(), 0600));
  RETURN_IF_ERROR(ShiftCurrent(workspace));
  RETURN_IF_ERROR(Rename(tmp_weights, Weights(workspace, "current")));
  RETURN_IF_ERROR(Rename(tmp_desc, Description(workspace, "current")));
  SyncDirectory(Dir(workspace));
  return absl::OkStatus();
}

absl::StatusOr<bool> ReturnToPrevious(const std::string& workspace, const v1::ServedModel& served) {
  ASSIGN_OR_RETURN(std::optional<HeldModel> previous, LoadHeldModel(workspace, "previous"));
  if (!previous || previous->served.promotion().sha256() != served.promotion().sha256()) return false;
  // Swap through a third name; then the promotion record of the rollback.
  const std::string w_tmp = Weights(workspace, "swap"), d_tmp = Description(workspace, "swap");
  RETURN_IF_ERROR(Rename(Weights(workspace, "previous"), w_tmp));
  RETURN_IF_ERROR(Rename(Description(workspace, "previous"), d_tmp));
  RETURN_IF_ERROR(ShiftCurrent(workspace));
  RETURN_IF_ERROR(Rename(w_tmp, Weights(workspace, "current")));
  RETURN_IF_ERROR(Rename(d_tmp, Description(workspace, "current")));
  RETURN_IF_ERROR(WriteFileAtomically(Description(workspace, "current"), served.SerializeAsString(), 0600));
  SyncDirectory(Dir(workspace));
  return true;
}

}  // namespace fedtune::site
