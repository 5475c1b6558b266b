#include "site-agent/runner/evaluation_scores.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/core/status.h"
#include "common/metrics/metrics.h"

namespace fedtune::site {
namespace {

namespace fs = std::filesystem;

constexpr int kJobsKept = 20;

// A label as a file name: "local:hospital-a" -> "local_hospital-a".
std::string FileStem(const std::string& split, const std::string& label) {
  std::string out = split + "-" + label;
  for (char& c : out) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) c = '_';
  }
  return out;
}

bool SafeName(const std::string& s) {
  return !s.empty() && s.size() < 128 && s.find('/') == std::string::npos && s != "." && s != "..";
}

absl::StatusOr<ScoredCases> Load(const fs::path& path) {
  ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(path.string()));
  ScoredCases c;
  const auto& meta = f.metadata();
  auto get = [&](const char* key) {
    auto it = meta.find(key);
    return it == meta.end() ? std::string() : it->second;
  };
  c.model_label = get("model_label");
  c.split = get("split");
  c.cases_sha256 = get("cases_sha256");
  const std::string findings = get("findings");
  if (!findings.empty()) c.findings = absl::StrSplit(findings, '\x1f');
  TensorMap t = f.ReadAll();
  if (!t.count("scores") || !t.count("labels")) return absl::DataLossError(absl::StrCat(path.string(), ": incomplete"));
  // Scores are stored as F64 (ToFloats would narrow them): read the bytes.
  if (t["scores"].dtype != DType::kF64) return absl::DataLossError(absl::StrCat(path.string(), ": scores are not F64"));
  c.scores.resize(static_cast<size_t>(t["scores"].numel()));
  std::memcpy(c.scores.data(), t["scores"].data.data(), c.scores.size() * sizeof(double));
  ASSIGN_OR_RETURN(c.labels, t["labels"].ToFloats());
  return c;
}

// <workspace>/evaluations/<job>/, created 0700.
absl::StatusOr<fs::path> JobDir(const std::string& workspace, const std::string& job_id) {
  if (!SafeName(job_id)) return absl::InvalidArgumentError("job id is not a file name");
  const fs::path root = fs::path(workspace) / "evaluations";
  const fs::path dir = root / job_id;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  fs::permissions(root, fs::perms::owner_all, fs::perm_options::replace, ec);
  fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  return dir;
}

}  // namespace

std::string CasesSha256(const std::vector<std::string>& ids) { return Sha256Hex(absl::StrJoin(ids, "\n")); }

absl::StatusOr<int> CountEvaluation(const std::string& workspace, const std::string& job_id) {
  ASSIGN_OR_RETURN(fs::path dir, JobDir(workspace, job_id));
  const fs::path file = dir / "evaluations.count";
  int count = 0;
  if (fs::exists(file)) {
    ASSIGN_OR_RETURN(std::string text, ReadFileBytes(file.string()));
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &count) || count < 0) {
      return absl::DataLossError(absl::StrCat(file.string(), " is damaged"));
    }
  }
  ++count;
  RETURN_IF_ERROR(WriteFileAtomically(file.string(), absl::StrCat(count, "\n")));
  return count;
}

absl::Status SaveScoredCases(const std::string& workspace, const ScoredCases& c) {
  ASSIGN_OR_RETURN(fs::path dir, JobDir(workspace, c.job_id));
  const fs::path root = dir.parent_path();
  std::error_code ec;
  const int64_t n = c.findings.empty() ? 0 : static_cast<int64_t>(c.scores.size() / c.findings.size());
  const int64_t nf = static_cast<int64_t>(c.findings.size());
  Tensor scores{DType::kF64, {n, nf}, {}};
  scores.data.resize(c.scores.size() * sizeof(double));
  std::memcpy(scores.data.data(), c.scores.data(), scores.data.size());
  ASSIGN_OR_RETURN(Tensor labels, Tensor::FromFloats({n, nf}, c.labels));
  RETURN_IF_ERROR(WriteSafetensors((dir / (FileStem(c.split, c.model_label) + ".safetensors")).string(),
                                   {{"scores", scores}, {"labels", labels}},
                                   {{"model_label", c.model_label},
                                    {"split", c.split},
                                    {"cases_sha256", c.cases_sha256},
                                    {"findings", absl::StrJoin(c.findings, "\x1f")}}));
  // Keep the most recent jobs' folders only.
  std::vector<std::pair<fs::file_time_type, fs::path>> jobs;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (e.is_directory()) jobs.emplace_back(e.last_write_time(ec), e.path());
  }
  if (static_cast<int>(jobs.size()) > kJobsKept) {
    std::sort(jobs.begin(), jobs.end());
    for (size_t i = 0; i + kJobsKept < jobs.size(); ++i) fs::remove_all(jobs[i].second, ec);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::PairedComparison>> CompareWithOtherModels(const std::string& workspace,
                                                                         const ScoredCases& c, int k_threshold) {
  std::vector<v1::PairedComparison> out;
  if (!SafeName(c.job_id)) return out;
  const fs::path dir = fs::path(workspace) / "evaluations" / c.job_id;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  const bool federated = c.model_label == "federated";
  const size_t nf = c.findings.size();
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const auto& path : files) {
    auto other = Load(path);
    if (!other.ok()) continue;  // another format or a partial file: nothing to compare
    if (other->model_label == c.model_label || other->split != c.split || other->cases_sha256 != c.cases_sha256 ||
        other->findings != c.findings || other->labels != c.labels) {
      continue;
    }
    const bool other_federated = other->model_label == "federated";
    if (federated == other_federated) continue;  // federated against local-only only
    const ScoredCases& a = federated ? c : *other;
    const ScoredCases& b = federated ? *other : c;
    for (size_t fi = 0; fi < nf; ++fi) {
      metrics::BinarySample sa, sb;
      for (size_t i = 0; i * nf + fi < a.labels.size(); ++i) {
        const float y = a.labels[i * nf + fi];
        if (y != 0.0f && y != 1.0f) continue;
        sa.scores.push_back(a.scores[i * nf + fi]);
        sb.scores.push_back(b.scores[i * nf + fi]);
        sa.labels.push_back(y == 1.0f ? 1 : 0);
      }
      sb.labels = sa.labels;
      if (sa.positives() < k_threshold || sa.negatives() < k_threshold) continue;  // suppressed there too
      auto t = metrics::DeLongPairedTest(sa, sb);
      if (!t.ok()) continue;
      v1::PairedComparison p;
      p.set_finding(c.findings[fi]);
      p.set_model_a(a.model_label);
      p.set_model_b(b.model_label);
      p.set_auroc_a(t->auroc_a);
      p.set_auroc_b(t->auroc_b);
      p.set_difference(t->difference);
      p.set_p_value(t->p_value);
      p.set_cases(static_cast<int64_t>(sa.scores.size()));
      out.push_back(std::move(p));
    }
  }
  return out;
}

}  // namespace fedtune::site
