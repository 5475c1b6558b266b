#include "common/core/sqlite_db.h"

#include <sqlite3.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/core/status.h"

namespace fedtune {
namespace {

// SQLite's result codes as status codes, so that callers can tell trouble
// that passes (a full disk, a busy database) from a damaged one.
absl::Status SqlStatus(int rc, std::string message) {
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(std::move(message));
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_NOMEM:
      return absl::UnavailableError(std::move(message));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(std::move(message));
    default:
      return absl::InternalError(std::move(message));
  }
}

absl::Status SqlError(sqlite3* db, std::string_view what) {
  return SqlStatus(sqlite3_extended_errcode(db), absl::StrCat("sqlite: ", Sv(what), ": ", sqlite3_errmsg(db)));
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path) {
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    sqlite3_close(raw);
    return absl::UnavailableError(absl::StrCat("cannot open database ", path, ": ", msg));
  }
  std::unique_ptr<SqliteDb> db(new SqliteDb(raw));
  sqlite3_busy_timeout(raw, 10000);
  RETURN_IF_ERROR(db->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"));
  return db;
}

SqliteDb::~SqliteDb() { sqlite3_close(db_); }

absl::Status SqliteDb::Exec(std::string_view sql) {
  char* err = nullptr;
  const std::string text(sql);
  if (const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err); rc != SQLITE_OK) {
    std::string msg = err ? err : "unknown error";
    sqlite3_free(err);
    return SqlStatus(rc, absl::StrCat("sqlite: ", msg));
  }
  return absl::OkStatus();
}

absl::Status SqliteDb::QuickCheck() {
  auto s = Prepare("PRAGMA quick_check");
  if (!s.ok()) return absl::DataLossError(absl::StrCat("quick_check could not run: ", s.status().message()));
  auto row = s->Step();
  if (!row.ok()) return absl::DataLossError(absl::StrCat("quick_check failed: ", row.status().message()));
  const std::string verdict = *row ? s->Text(0) : "no answer";
  if (verdict != "ok") return absl::DataLossError(absl::StrCat("quick_check: ", verdict));
  return absl::OkStatus();
}

absl::Status SqliteDb::EnsureColumn(std::string_view table, std::string_view column, std::string_view declaration) {
  ASSIGN_OR_RETURN(SqliteStatement s, Prepare(absl::StrCat("PRAGMA table_info(", Sv(table), ")")));
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    if (s.Text(1) == column) return absl::OkStatus();
  }
  return Exec(absl::StrCat("ALTER TABLE ", Sv(table), " ADD COLUMN ", Sv(column), " ", Sv(declaration)));
}

absl::StatusOr<SqliteStatement> SqliteDb::Prepare(std::string_view sql) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &st, nullptr) != SQLITE_OK) {
    return SqlError(db_, "prepare");
  }
  return SqliteStatement(db_, st);
}

int64_t SqliteDb::Changes() const { return sqlite3_changes64(db_); }

SqliteStatement::SqliteStatement(SqliteStatement&& o) noexcept : db_(o.db_), st_(std::exchange(o.st_, nullptr)) {}
SqliteStatement& SqliteStatement::operator=(SqliteStatement&& o) noexcept {
  if (this != &o) {
    sqlite3_finalize(st_);
    db_ = o.db_;
    st_ = std::exchange(o.st_, nullptr);
  }
  return *this;
}
SqliteStatement::~SqliteStatement() { sqlite3_finalize(st_); }

SqliteStatement& SqliteStatement::Bind(int index, int64_t value) {
  sqlite3_bind_int64(st_, index, value);
  return *this;
}
SqliteStatement& SqliteStatement::Bind(int index, double value) {
  sqlite3_bind_double(st_, index, value);
  return *this;
}
SqliteStatement& SqliteStatement::Bind(int index, std::string_view text) {
  sqlite3_bind_text(st_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  return *this;
}
SqliteStatement& SqliteStatement::BindBlob(int index, std::string_view bytes) {
  sqlite3_bind_blob(st_, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  return *this;
}

absl::StatusOr<bool> SqliteStatement::Step() {
  const int rc = sqlite3_step(st_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqlError(db_, "step");
}

absl::Status SqliteStatement::Run() {
  ASSIGN_OR_RETURN(bool row, Step());
  (void)row;
  sqlite3_reset(st_);
  return absl::OkStatus();
}

void SqliteStatement::Reset() {
  sqlite3_reset(st_);
  sqlite3_clear_bindings(st_);
}

int64_t SqliteStatement::Int(int column) const { return sqlite3_column_int64(st_, column); }
double SqliteStatement::Double(int column) const { return sqlite3_column_double(st_, column); }
std::string SqliteStatement::Text(int column) const {
  const void* p = sqlite3_column_blob(st_, column);
  const int n = sqlite3_column_bytes(st_, column);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}
bool SqliteStatement::IsNull(int column) const { return sqlite3_column_type(st_, column) == SQLITE_NULL; }

absl::StatusOr<std::unique_ptr<SqliteTransaction>> SqliteTransaction::Begin(SqliteDb& db) {
  RETURN_IF_ERROR(db.Exec("BEGIN IMMEDIATE"));
  return std::unique_ptr<SqliteTransaction>(new SqliteTransaction(db));
}

SqliteTransaction::~SqliteTransaction() {
  if (!done_) (void)db_.Exec("ROLLBACK");
}

absl::Status SqliteTransaction::Commit() {
  RETURN_IF_ERROR(db_.Exec("COMMIT"));
  done_ = true;
  return absl::OkStatus();
}

}  // namespace fedtune
