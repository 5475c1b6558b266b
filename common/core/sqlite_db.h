// A small RAII layer over SQLite for state that must survive a crash: WAL
// journal, synchronous=FULL (a committed transaction survives power loss and
// `kill -9`), prepared statements with typed binds, and transactions that
// roll back unless committed.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

struct sqlite3;
struct sqlite3_stmt;

namespace fedtune {

class SqliteStatement;

class SqliteDb {
 public:
  // Opens (creating) the database at `path` with foreign keys on, WAL,
  // synchronous=FULL and a busy timeout.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path);
  ~SqliteDb();
  SqliteDb(const SqliteDb&) = delete;
  SqliteDb& operator=(const SqliteDb&) = delete;

  // Runs one or more statements without results.
  absl::Status Exec(std::string_view sql);
  absl::StatusOr<SqliteStatement> Prepare(std::string_view sql);
  int64_t Changes() const;
  // Adds `column` (with its SQL `declaration`, e.g. "TEXT NOT NULL DEFAULT ''")
  // to `table` unless the table has it: how a newer release extends the
  // schema of a database an older one created.
  absl::Status EnsureColumn(std::string_view table, std::string_view column, std::string_view declaration);
  // PRAGMA quick_check: DATA_LOSS with SQLite's first complaint when the
  // file is damaged (a torn write, a disk error), OK otherwise.
  absl::Status QuickCheck();
  sqlite3* raw() { return db_; }

 private:
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  sqlite3* db_;
};

// A prepared statement. Bind() indices are 1-based, as in SQL text.
class SqliteStatement {
 public:
  SqliteStatement(SqliteStatement&&) noexcept;
  SqliteStatement& operator=(SqliteStatement&&) noexcept;
  ~SqliteStatement();

  SqliteStatement& Bind(int index, int64_t value);
  SqliteStatement& Bind(int index, double value);
  SqliteStatement& Bind(int index, std::string_view text);
  SqliteStatement& BindBlob(int index, std::string_view bytes);
  // Several values at once, from index 1.
  template <typename... T>
  SqliteStatement& BindAll(const T&... values) {
    int i = 0;
    (BindOne(++i, values), ...);
    return *this;
  }

  // True while a row is available; false when done. Errors carry SQLite's message.
  absl::StatusOr<bool> Step();
  // Runs a statement that returns no rows.
  absl::Status Run();
  void Reset();

  int64_t Int(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;  // also blobs
  bool IsNull(int column) const;

 private:
  friend class SqliteDb;
  SqliteStatement(sqlite3* db, sqlite3_stmt* st) : db_(db), st_(st) {}
  void BindOne(int i, int64_t v) { Bind(i, v); }
  void BindOne(int i, int v) { Bind(i, static_cast<int64_t>(v)); }
  void BindOne(int i, double v) { Bind(i, v); }
  void BindOne(int i, std::string_view v) { Bind(i, v); }
  void BindOne(int i, const std::string& v) { Bind(i, std::string_view(v)); }
  void BindOne(int i, const char* v) { Bind(i, std::string_view(v)); }
  sqlite3* db_;
  sqlite3_stmt* st_;
};

// BEGIN IMMEDIATE on construction; ROLLBACK on destruction unless Commit()
// succeeded.
class SqliteTransaction {
 public:
  static absl::StatusOr<std::unique_ptr<SqliteTransaction>> Begin(SqliteDb& db);
  ~SqliteTransaction();
  absl::Status Commit();

 private:
  explicit SqliteTransaction(SqliteDb& db) : db_(db) {}
  SqliteDb& db_;
  bool done_ = false;
};

}  // namespace fedtune
