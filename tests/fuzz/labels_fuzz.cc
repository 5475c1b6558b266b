// Fuzzes the labels CSV reader (site-agent/dataset/labels.h). The findings
// asked for are the header's own columns, so that rows get past the header
// check; every layout and aggregation is tried on each input. Any input is
// either refused with a status or gives one label per finding per key, each
// 1, 0 or -1.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "site-agent/dataset/labels.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using fedtune::fuzz::Check;
using fedtune::fuzz::Report;

void CheckTable(const fedtune::dataset::LabelTable& t, const std::vector<std::string>& findings) {
  Check(t.findings == findings);
  for (const auto& [key, values] : t.by_key) {
    Check(values.size() == findings.size());
    for (float v : values) Check(v == 1.0f || v == 0.0f || v == -1.0f);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedtune::dataset;
  const std::string_view csv(reinterpret_cast<const char*>(data), size);
  // The header's columns, read past a UTF-8 byte order mark as ParseLabels does.
  const std::string_view bom = "\xEF\xBB\xBF";
  auto rows = ParseCsv(csv.substr(0, 3) == bom ? csv.substr(3) : csv);
  if (!rows.ok() || rows->empty() || (*rows)[0].empty()) {
    // Still exercise ParseLabels on text without a usable header.
    Report("csv", rows.status());
    Report("labels", ParseLabels(csv, LabelOptions{.findings = {"Cardiomegaly"}}).status());
    return 0;
  }
  const std::vector<std::string>& header = (*rows)[0];

  // VinDr layout: image_id, rad_id, then findings.
  std::vector<std::string> findings;
  for (const std::string& column : header) {
    if (column != "image_id" && column != "rad_id" && findings.size() < 8) findings.push_back(column);
  }
  for (RaterAggregation aggregation : {RaterAggregation::kAny, RaterAggregation::kMajority}) {
    LabelOptions o{.layout = LabelLayout::kVinDr, .aggregation = aggregation, .findings = findings};
    auto t = ParseLabels(csv, o);
    Report("vindr labels", t.status());
    if (t.ok()) CheckTable(*t, findings);
  }

  // Wide layout keyed by the first column.
  std::vector<std::string> wide(header.begin() + 1, header.begin() + std::min<size_t>(header.size(), 9));
  for (UncertainPolicy uncertain :
       {UncertainPolicy::kUnknown, UncertainPolicy::kPositive, UncertainPolicy::kNegative}) {
    LabelOptions o{.layout = LabelLayout::kWide, .key_column = header[0], .uncertain = uncertain, .findings = wide};
    auto t = ParseLabels(csv, o);
    Report("wide labels", t.status());
    if (t.ok()) CheckTable(*t, wide);
  }
  return 0;
}
