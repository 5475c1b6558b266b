// TOML configuration with errors that say where and what: every failure names
// the file, the line and column when known, the full dotted key, what was
// expected and what was found, e.g.
//   site.toml:12:14: key 'train.batch_size': expected an integer, got a string
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedtune {

// A read-only view of one TOML table (the document root or a sub-table).
// Cheap to copy; sub-tables share the parsed document.
class Config {
 public:
  // Parses a file. NOT_FOUND if it does not exist; INVALID_ARGUMENT with
  // "path:line:col: message" on a syntax error.
  static absl::StatusOr<Config> LoadFile(const std::string& path);
  // Parses text; `source` names it in error messages.
  static absl::StatusOr<Config> Parse(std::string_view text, std::string source = "<config>");

  // Required values: INVALID_ARGUMENT when missing or of another type.
  // Keys may be dotted ("train.batch_size") to reach into sub-tables.
  absl::StatusOr<std::string> GetString(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetDouble(std::string_view key) const;  // integers are accepted
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringList(std::string_view key) const;

  // Optional values: `fallback` when missing; still an error when present
  // with the wrong type (a typo'd value must never silently become a default).
  absl::StatusOr<std::string> GetString(std::string_view key, std::string fallback) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key, int64_t fallback) const;
  absl::StatusOr<double> GetDouble(std::string_view key, double fallback) const;
  absl::StatusOr<bool> GetBool(std::string_view key, bool fallback) const;
  absl::StatusOr<std::vector<std::string>> GetStringList(std::string_view key,
                                                         std::vector<std::string> fallback) const;

  // An integer that must lie in [lo, hi]; `fallback` when missing.
  absl::StatusOr<int64_t> GetIntInRange(std::string_view key, int64_t lo, int64_t hi,
                                        int64_t fallback) const;

  // The sub-table at `key`; INVALID_ARGUMENT if missing or not a table.
  absl::StatusOr<Config> GetTable(std::string_view key) const;
  // The sub-table at `key`, or an empty table when it is missing.
  absl::StatusOr<Config> GetTableOrEmpty(std::string_view key) const;

  // INVALID_ARGUMENT naming the first key of this table that is not in
  // `known`, so that a misspelt option is reported instead of ignored.
  absl::Status RejectUnknownKeys(std::initializer_list<std::string_view> known) const;
  // Whether `key` (dotted) is present, whatever its type.
  bool Has(std::string_view key) const;

  // The file (or source name) this configuration came from.
  const std::string& source() const;
  // Full dotted path of this table from the document root ("" for the root).
  const std::string& path() const { return path_; }

 private:
  struct Document;  // the parsed toml::table and its source name
  Config(std::shared_ptr<const Document> doc, std::string path)
      : doc_(std::move(doc)), path_(std::move(path)) {}
  std::string FullKey(std::string_view key) const;

  std::shared_ptr<const Document> doc_;
  std::string path_;  // dotted path of this table from the root
};

}  // namespace fedtune
