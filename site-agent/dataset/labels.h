// Label files: which findings each image has. Parsed before identifiers are
// replaced, so keys may be identifying (accession numbers): errors name lines
// and columns, never key values.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::dataset {

enum class LabelLayout {
  // VinDr-CXR image_labels_*.csv: image_id, rad_id, one 0/1 column per finding,
  // several radiologist rows per image.
  kVinDr,
  // One row per image: key column, one column per finding holding 1, 0, -1
  // (uncertain) or blank (not read).
  kWide,
};

enum class RaterAggregation { kAny, kMajority };       // VinDr: positive if any / most raters marked it
enum class UncertainPolicy { kUnknown, kPositive, kNegative };  // wide layout's -1

struct LabelOptions {
  LabelLayout layout = LabelLayout::kVinDr;
  std::string key_column = "image_id";
  RaterAggregation aggregation = RaterAggregation::kAny;
  UncertainPolicy uncertain = UncertainPolicy::kUnknown;
  // Findings to read, in this order; every one must be a column.
  std::vector<std::string> findings;
};

// Label values: 1 positive, 0 negative, -1 unknown (left out of loss and metrics).
struct LabelTable {
  std::vector<std::string> findings;
  std::map<std::string, std::vector<float>> by_key;
};

// Parses CSV text (RFC 4180 quoting, CRLF or LF, optional UTF-8 BOM).
// INVALID_ARGUMENT "source:line: ..." for a missing column, a value that is
// not a label, a ragged row, or (wide layout) a duplicated key.
absl::StatusOr<LabelTable> ParseLabels(std::string_view csv, const LabelOptions& options,
                                       std::string_view source = "labels.csv");

// Splits CSV text into rows of fields. INVALID_ARGUMENT on an unterminated quote.
absl::StatusOr<std::vector<std::vector<std::string>>> ParseCsv(std::string_view text);

}  // namespace fedtune::dataset
