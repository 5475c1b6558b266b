#include "site-agent/dataset/labels.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/core/status.h"

namespace fedtune::dataset {
namespace {

absl::Status At(std::string_view source, size_t line, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(Sv(source), ":", line, ": ", Sv(what)));
}

// "1", "1.0", "0", "0.0", "-1", "-1.0" or blank -> value; anything else false.
bool ParseLabelValue(std::string_view raw, float* out, bool* blank) {
  std::string v(absl::StripAsciiWhitespace(absl::string_view(raw.data(), raw.size())));
  *blank = v.empty();
  if (*blank) return true;
  if (v == "1" || v == "1.0") *out = 1;
  else if (v == "0" || v == "0.0") *out = 0;
  else if (v == "-1" || v == "-1.0") *out = -1;
  else return false;
  return true;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<std::string>>> ParseCsv(std::string_view text) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false, any = false;
  size_t line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field.push_back('"');
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        if (c == '\n') ++line;
        field.push_back(c);
      }
      continue;
    }
    if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      if (any || !field.empty()) {
        row.push_back(std::move(field));
        rows.push_back(std::move(row));
      }
      row.clear();
      field.clear();
      any = false;
      ++line;
    } else {
      field.push_back(c);
      any = true;
    }
  }
  if (quoted) return absl::InvalidArgumentError(absl::StrCat("line ", line, ": unterminated quoted field"));
  if (any || !field.empty()) {
    row.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::StatusOr<LabelTable> ParseLabels(std::string_view csv, const LabelOptions& options, std::string_view source) {
  auto parsed = ParseCsv(csv);
  if (!parsed.ok()) return Annotate(parsed.status(), source);
  const auto& rows = *parsed;
  if (rows.empty()) return At(source, 1, "empty file: a header row is needed");
  const std::vector<std::string>& header = rows[0];
  auto column = [&](const std::string& name) -> int {
    for (size_t i = 0; i < header.size(); ++i) {
      if (absl::StripAsciiWhitespace(header[i]) == name) return static_cast<int>(i);
    }
    return -1;
  };
  const int key_col = column(options.key_column);
  if (key_col < 0) return At(source, 1, absl::StrCat("no key column \"", options.key_column, "\""));
  if (options.findings.empty()) return At(source, 1, "no findings configured");
  std::vector<int> cols;
  for (const std::string& f : options.findings) {
    const int c = column(f);
    if (c < 0) return At(source, 1, absl::StrCat("no column for finding \"", f, "\""));
    cols.push_back(c);
  }
  const size_t nf = cols.size();
  LabelTable table;
  table.findings = options.findings;
  // VinDr: per key, per finding, raters who marked it and raters in total.
  std::map<std::string, std::pair<std::vector<int>, int>> votes;
  for (size_t r = 1; r < rows.size(); ++r) {
    const size_t line = r + 1;
    const auto& row = rows[r];
    if (row.size() != header.size()) {
      return At(source, line, absl::StrCat(row.size(), " fields, the header has ", header.size()));
    }
    std::string key(absl::StripAsciiWhitespace(row[static_cast<size_t>(key_col)]));
    if (key.empty()) return At(source, line, "empty key");
    std::vector<float> values(nf, -1);
    for (size_t k = 0; k < nf; ++k) {
      float v = -1;
      bool blank = false;
      if (!ParseLabelValue(row[static_cast<size_t>(cols[k])], &v, &blank)) {
        return At(source, line, absl::StrCat("column \"", options.findings[k], "\" must be 1, 0, -1 or blank"));
      }
      if (options.layout == LabelLayout::kVinDr && (blank || v < 0)) {
        return At(source, line, absl::StrCat("column \"", options.findings[k], "\" must be 0 or 1 in VinDr layout"));
      }
      if (blank) continue;
      if (v < 0) {
        v = options.uncertain == UncertainPolicy::kPositive ? 1 : options.uncertain == UncertainPolicy::kNegative ? 0 : -1;
      }
      values[k] = v;
    }
    if (options.layout == LabelLayout::kWide) {
      if (!table.by_key.emplace(std::move(key), std::move(values)).second) {
        return At(source, line, "key already given on an earlier row");
      }
      continue;
    }
    auto& [marked, raters] = votes[key];
    marked.resize(nf, 0);
    ++raters;
    for (size_t k = 0; k < nf; ++k) marked[k] += values[k] == 1 ? 1 : 0;
  }
  for (auto& [key, v] : votes) {
    const auto& [marked, raters] = v;
    std::vector<float> values(nf, 0);
    for (size_t k = 0; k < nf; ++k) {
      const bool positive = options.aggregation == RaterAggregation::kAny ? marked[k] > 0 : 2 * marked[k] > raters;
      values[k] = positive ? 1 : 0;
    }
    table.by_key.emplace(key, std::move(values));
  }
  return table;
}

}  // namespace fedtune::dataset
