// The rule: no patient identifier ever reaches a log line, an error message,
// or anything that leaves the site. "Patient identifier" means any value read
// from a patient-identifying DICOM attribute or label file before
// de-identification: names, IDs, birth dates, accession numbers, original
// UIDs, addresses, file paths that embed them.
//
// Phi<T> enforces the rule by type. Such values are wrapped as soon as they
// are read; a Phi has no conversion to anything printable, absl::StrCat does
// not accept it, and its fmt/spdlog formatter (common/core/logging.h) and
// operator<< print "[PHI]". The value is reachable only through reveal(),
// which de-identification code calls and reviewers can find with grep.
#pragma once

#include <ostream>
#include <utility>

namespace fedtune {

template <typename T>
class Phi {
 public:
  Phi() = default;
  explicit Phi(T value) : value_(std::move(value)) {}

  // The identifying value. Call only to de-identify or to compare.
  const T& reveal() const { return value_; }

  friend bool operator==(const Phi&, const Phi&) = default;
  friend std::ostream& operator<<(std::ostream& os, const Phi&) { return os << kRedacted; }

  static constexpr const char* kRedacted = "[PHI]";

 private:
  T value_{};
};

}  // namespace fedtune
