// The site's secret key: the HMAC key behind every pseudonym, UID and date
// shift. It never leaves the site host and is never logged.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::ingest {

inline constexpr size_t kSiteKeyBytes = 32;

// Reads the key at `path`, creating it (32 random bytes, mode 0600) when the
// file does not exist. PERMISSION_DENIED when the file is readable or writable
// by group or others (fix with chmod 600); DATA_LOSS when it is not 32 bytes.
// Errors name the path, never the key.
absl::StatusOr<std::vector<uint8_t>> LoadOrCreateSiteKey(const std::string& path);

}  // namespace fedtune::ingest
