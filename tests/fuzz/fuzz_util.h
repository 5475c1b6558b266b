// Shared by the fuzz targets of tests/fuzz.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "absl/status/status.h"

namespace fedtune::fuzz {

// A broken property is a finding like a crash: stop with a stack trace.
inline void Check(bool ok, const char* what = "property") {
  if (!ok) {
    std::fprintf(stderr, "fuzz check failed: %s\n", what);
    std::abort();
  }
}

// With FEDTUNE_FUZZ_VERBOSE=1 in the environment, prints what each parser
// said about the input (to see why a seed or reproducer is refused).
inline void Report(std::string_view what, const absl::Status& status) {
  static const bool verbose = std::getenv("FEDTUNE_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(what.size()), what.data(),
                 status.ok() ? "OK" : std::string(status.message()).c_str());
  }
}

}  // namespace fedtune::fuzz
