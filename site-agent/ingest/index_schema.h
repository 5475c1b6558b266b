// The workspace index's schema (shared by ingest, which writes the index, and
// workspace_index.h, which reads it).
#pragma once

#include "absl/status/status.h"
#include "common/core/sqlite_db.h"

namespace fedtune::ingest {

// Creates the index's tables, adds the columns and tables of later releases
// to an older index, and moves labels stored by position (the first
// release) to labels by finding name. Idempotent.
absl::Status UpgradeIndex(SqliteDb& db);

}  // namespace fedtune::ingest
