#include "site-agent/ingest/site_key.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/status.h"

namespace fedtune::ingest {

absl::StatusOr<std::vector<uint8_t>> LoadOrCreateSiteKey(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return absl::PermissionDeniedError(absl::StrCat("cannot inspect site key ", path));
    ASSIGN_OR_RETURN(std::vector<uint8_t> key, SecureRandomBytes(kSiteKeyBytes));
    RETURN_IF_ERROR(WriteFileAtomically(
        path, std::string_view(reinterpret_cast<const char*>(key.data()), key.size()), 0600));
    return key;
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", static_cast<unsigned>(st.st_mode & 0777));
    return absl::PermissionDeniedError(absl::StrCat("site key ", path, " is accessible to group or others (mode ",
                                                    mode, "); run: chmod 600 ", path));
  }
  ASSIGN_OR_RETURN(std::string bytes, ReadFileBytes(path));
  if (bytes.size() != kSiteKeyBytes) {
    return absl::DataLossError(absl::StrCat("site key ", path, " is ", bytes.size(), " bytes, expected ",
                                            kSiteKeyBytes, "; restore it from backup (a new key unlinks all pseudonyms)"));
  }
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

}  // namespace fedtune::ingest
