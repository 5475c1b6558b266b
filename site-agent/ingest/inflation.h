// A file in the Deflated Explicit VR Little Endian transfer syntax is
// inflated whole when DCMTK reads it, and deflate expands up to ~1000x: a
// small file can hold gigabytes of dataset whatever its Rows and Columns
// say. Its dataset is measured before DCMTK sees it: counted while inflating,
// nothing kept, stopping past the limit.
#pragma once

#include <cstdint>
#include <string_view>

namespace fedtune::ingest {

inline constexpr char kDeflatedTransferSyntax[] = "1.2.840.10008.1.2.1.99";

struct Inflation {
  enum Kind {
    kNotDeflated,   // the file meta group names another transfer syntax (or there is none)
    kMeasured,      // deflated: `bytes` is what it inflates to (or just past the limit)
    kUnfollowable,  // the file meta group could not be followed (the caller asks DCMTK, or refuses)
  } kind;
  int64_t bytes = 0;
};

// Measures `file` (a DICOM Part 10 file's bytes) up to `limit` bytes inflated.
Inflation MeasureInflation(std::string_view file, int64_t limit);

}  // namespace fedtune::ingest
