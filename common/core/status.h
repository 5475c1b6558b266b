// Error vocabulary shared by every fedtune component.
//
// absl::Status codes are gRPC codes; pick them by what the caller should do:
//   UNAVAILABLE         retry the call later
//   FAILED_PRECONDITION fix the state first
//   ABORTED             stale round or version: re-read and retry
//   PERMISSION_DENIED   the certificate identity does not allow this
//   INVALID_ARGUMENT    bad input; retrying will not help
//   DATA_LOSS           a file or transfer is corrupt
//
// Debian's abseil ships no RETURN_IF_ERROR / ASSIGN_OR_RETURN, so they live here.
#pragma once

#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace fedtune {

// Debian's abseil is built with its own absl::string_view (not an alias of
// std::string_view), so absl::StrCat and friends do not accept a
// std::string_view. Wrap one with Sv() where it meets absl.
inline absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

// Returns `status` with `context` prepended to its message ("context: message"),
// keeping the code. An OK status is returned unchanged.
absl::Status Annotate(const absl::Status& status, std::string_view context);

namespace internal_status {
inline const absl::Status& AsStatus(const absl::Status& s) { return s; }
template <typename T>
const absl::Status& AsStatus(const absl::StatusOr<T>& s) {
  return s.status();
}
}  // namespace internal_status

}  // namespace fedtune

#define FEDTUNE_STATUS_CONCAT_INNER_(a, b) a##b
#define FEDTUNE_STATUS_CONCAT_(a, b) FEDTUNE_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status or absl::StatusOr) and returns its status
// from the enclosing function when it is not OK.
#define RETURN_IF_ERROR(expr)                                                  \
  do {                                                                         \
    if (auto fedtune_status_ = (expr); !fedtune_status_.ok()) {                \
      return ::fedtune::internal_status::AsStatus(fedtune_status_);            \
    }                                                                          \
  } while (false)

// ASSIGN_OR_RETURN(lhs, expr): evaluates `expr` (an absl::StatusOr<T>); on
// error returns its status from the enclosing function, otherwise moves the
// value into `lhs`, which may be a declaration (`auto x`) or an lvalue.
#define ASSIGN_OR_RETURN(lhs, expr)                                            \
  FEDTUNE_ASSIGN_OR_RETURN_IMPL_(                                              \
      FEDTUNE_STATUS_CONCAT_(fedtune_statusor_, __LINE__), lhs, expr)

#define FEDTUNE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr)                         \
  auto tmp = (expr);                                                           \
  if (!tmp.ok()) return std::move(tmp).status();                               \
  lhs = std::move(tmp).value()
