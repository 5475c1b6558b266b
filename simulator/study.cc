#include "simulator/study.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <toml++/toml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/core/config.h"
#include "common/core/file_io.h"
#include "common/core/safetensors.h"
#include "common/core/status.h"
#include "common/fl/task_spec.h"
#include "common/metrics/evaluation.h"
#include "common/metrics/metrics.h"
#include "common/model/classifier.h"
#include "coordinator/engine/initial_weights.h"
#include "coordinator/engine/job_spec.h"
#include "simulator/study_output.h"
#include "site-agent/runner/cache_dataset.h"
#include "site-agent/runner/task_executor.h"

namespace fedtune::sim {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::set<std::string> kArms = {"pooled", "federated", "local"};
const std::set<std::string> kMethods = {"lora", "bitfit", "linear_probe", "full"};

// Several datasets read as one, in order (pooled training, pooled splits).
class ConcatDataset final : public model::ImageDataset {
 public:
  explicit ConcatDataset(std::vector<std::unique_ptr<site::CacheDataset>> parts) : parts_(std::move(parts)) {
    size_t at = 0;
    for (const auto& p : parts_) {
      starts_.push_back(at);
      at += p->size();
    }
    size_ = at;
  }
  size_t size() const override { return size_; }
  int height() const override { return parts_.empty() ? 0 : parts_[0]->height(); }
  int width() const override { return parts_.empty() ? 0 : parts_[0]->width(); }
  size_t num_findings() const override { return parts_.empty() ? 0 : parts_[0]->num_findings(); }
  absl::Status Get(size_t index, std::span<float> pixels, std::span<float> labels) const override {
    const auto [part, i] = Locate(index);
    return parts_[part]->Get(i, pixels, labels);
  }
  absl::Status GetLabels(size_t index, std::span<float> labels) const override {
    const auto [part, i] = Locate(index);
    return parts_[part]->GetLabels(i, labels);
  }

 private:
  std::pair<size_t, size_t> Locate(size_t index) const {
    size_t part = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), index) - starts_.begin()) - 1;
    return {part, index - starts_[part]};
  }
  std::vector<std::unique_ptr<site::CacheDataset>> parts_;
  std::vector<size_t> starts_;
  size_t size_ = 0;
};

struct Cell {
  std::string method, strategy, arm, site;  // site: the local arm's
  int64_t size = 0;
  int64_t seed = 0;
  std::string ArmLabel() const { return site.empty() ? arm : "local:" + site; }
  std::string Key() const {
    std::string k = absl::StrCat("n", size, "-", method, "-", strategy, "-", ArmLabel(), "-s", seed);
    for (char& ch : k) {
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') ch = '_';
    }
    return k;
  }
};

std::vector<std::string> ReadList(const Config& c, std::string_view key, std::vector<std::string> fallback,
                                  absl::Status* error) {
  auto v = c.GetStringList(key, std::move(fallback));
  if (!v.ok()) {
    *error = v.status();
    return {};
  }
  return *v;
}

absl::StatusOr<std::vector<int64_t>> ReadInts(const toml::table& doc, const std::string& path, const std::string& key,
                                              std::vector<int64_t> fallback, int64_t lo) {
  const auto* arr = doc["study"][key].as_array();
  if (doc["study"][key] && arr == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": key 'study.", key, "': expected a list of integers"));
  }
  if (arr == nullptr) return fallback;
  std::vector<int64_t> out;
  for (const auto& n : *arr) {
    auto v = n.value<int64_t>();
    if (!v || *v < lo) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": key 'study.", key, "': expected integers of at least ", lo));
    }
    out.push_back(*v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": key 'study.", key, "' is empty"));
  return out;
}

// The model of a cell's job on this machine's CPU (or the sites' device).
absl::StatusOr<std::unique_ptr<model::Classifier>> BuildModel(const coordinator::JobSpec& job,
                                                              const VirtualSite& any_site, uint64_t seed) {
  ASSIGN_OR_RETURN(model::ModelSpec spec, fl::ModelSpecFor(job.backbone_architecture, job.train));
  model::ClassifierOptions o;
  o.device = any_site.device;
  o.seed = seed;
  o.backbone_path = any_site.backbone_path;
  return model::Classifier::Create(spec, o);
}

struct Splits {
  std::vector<std::unique_ptr<site::CacheDataset>> train;  // each site's nested subset
  std::vector<int64_t> train_images;                       // per site
};

absl::StatusOr<std::unique_ptr<site::CacheDataset>> OpenSplit(const VirtualSite& s,
                                                            const std::vector<std::string>& findings,
                                                            const std::string& split, int64_t cap, uint64_t seed) {
  site::CacheDatasetOptions o;
  o.findings = findings;
  o.split = split;
  o.labelled_only = true;
  o.max_images = cap;
  o.subset_seed = seed;
  auto d = site::CacheDataset::Open(s.workspace, o);
  if (!d.ok()) return Annotate(d.status(), absl::StrCat("site ", s.site_id, " ", split));
  return d;
}

absl::StatusOr<std::unique_ptr<ConcatDataset>> Pooled(const std::vector<VirtualSite>& sites,
                                                      const std::vector<std::string>& findings,
                                                      const std::string& split, const std::string& only_site = "") {
  std::vector<std::unique_ptr<site::CacheDataset>> parts;
  for (const auto& s : sites) {
    if (!only_site.empty() && s.site_id != only_site) continue;
    ASSIGN_OR_RETURN(auto d, OpenSplit(s, findings, split, 0, 0));
    parts.push_back(std::move(d));
  }
  return std::make_unique<ConcatDataset>(std::move(parts));
}

using Scored = site::ScoredDataset;

json Ci(double v, metrics::Interval ci) {
  auto num = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  return json{{"value", num(v)}, {"lower", num(ci.lower)}, {"upper", num(ci.upper)}};
}

// The cell's model on the pooled test set: thresholds (Youden) from the
// pooled validation split, every metric with its interval, the macro means
// with bootstrap intervals, and the scores (for paired tests).
absl::StatusOr<json> EvaluateCell(model::Classifier& m, const std::vector<std::string>& findings,
                                  const model::ImageDataset& val, const model::ImageDataset& test, int resamples,
                                  uint64_t seed) {
  ASSIGN_OR_RETURN(Scored on_val, site::ScoreDataset(m, val));
  metrics::EvaluationOptions eo;
  eo.seed = seed;
  eo.bootstrap_resamples = resamples;
  ASSIGN_OR_RETURN(std::vector<double> thresholds,
                   metrics::ChooseThresholds(findings, on_val.scores, on_val.labels, eo));
  ASSIGN_OR_RETURN(Scored on_test, site::ScoreDataset(m, test));
  ASSIGN_OR_RETURN(metrics::EvaluationResult r,
                   metrics::Evaluate(findings, on_test.scores, on_test.labels, thresholds, eo));
  ASSIGN_OR_RETURN(metrics::MacroIntervals macro,
                   metrics::BootstrapMacroIntervals(findings.size(), on_test.scores, on_test.labels, thresholds,
                                                    resamples, seed));
  json out;
  out["test_cases"] = test.size();
  out["val_macro_auroc"] = metrics::MacroAuroc(findings.size(), on_val.scores, on_val.labels);
  json fs = json::array();
  for (const auto& f : r.findings) {
    json j{{"finding", f.finding}, {"positives", f.positives}, {"negatives", f.negatives}, {"evaluable", f.evaluable}};
    if (f.evaluable) {
      j["auroc"] = Ci(f.auroc, f.auroc_ci);
      j["auprc"] = Ci(f.auprc, f.auprc_ci);
      j["sensitivity"] = Ci(f.sensitivity, f.sensitivity_ci);
      j["specificity"] = Ci(f.specificity, f.specificity_ci);
      j["f1"] = Ci(f.f1, f.f1_ci);
      j["mcc"] = Ci(f.mcc, f.mcc_ci);
      j["threshold"] = f.threshold;
    }
    fs.push_back(std::move(j));
  }
  out["findings"] = std::move(fs);
  out["macro"] = json{{"auroc", Ci(r.macro_auroc, macro.auroc)},
                      {"auprc", Ci(r.macro_auprc, macro.auprc)},
                      {"sensitivity", Ci(r.macro_sensitivity, macro.sensitivity)},
                      {"specificity", Ci(r.macro_specificity, macro.specificity)},
                      {"f1", Ci(r.macro_f1, macro.f1)},
                      {"mcc", Ci(r.macro_mcc, macro.mcc)}};
  out["test_scores"] = on_test.scores;
  out["test_labels"] = on_test.labels;
  return out;
}

class Study {
 public:
  Study(StudyConfig config, const SimLog& log) : c_(std::move(config)), log_(log) {}

  absl::StatusOr<StudyOutcome> Run() {
    const auto started = std::chrono::steady_clock::now();
    RETURN_IF_ERROR(PrepareSynthetic(&c_.federation, log_));
    ASSIGN_OR_RETURN(base_, coordinator::ParseJobSpec(c_.federation.job_toml, c_.federation.job_source));
    findings_.assign(base_.train.findings().begin(), base_.train.findings().end());
    if (c_.methods.empty()) c_.methods = {base_.train.method()};
    if (c_.strategies.empty()) c_.strategies = {base_.strategy.name};
    std::vector<Cell> cells = Cells();
    const std::string cells_dir = c_.federation.work_dir + "/cells";
    std::error_code ec;
    fs::create_directories(cells_dir, ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", cells_dir, ": ", ec.message()));
    ASSIGN_OR_RETURN(val_, Pooled(c_.federation.sites, findings_, "val"));
    ASSIGN_OR_RETURN(test_, Pooled(c_.federation.sites, findings_, "test"));
    if (test_->size() == 0 || val_->size() == 0) {
      return absl::FailedPreconditionError("the sites have no labelled validation or test images to evaluate on");
    }
    StudyOutcome outcome;
    outcome.cells = static_cast<int>(cells.size());
    std::vector<json> results;
    for (size_t i = 0; i < cells.size(); ++i) {
      const Cell& cell = cells[i];
      const std::string path = cells_dir + "/" + cell.Key() + ".json";
      if (auto text = ReadFileBytes(path); text.ok()) {
        json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
        if (!j.is_discarded() && j.value("key", "") == cell.Key()) {
          results.push_back(std::move(j));
          ++outcome.reused;
          continue;
        }
      }
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      Log(absl::StrFormat("[%d/%d] %s: %s, %s, %s images, %s, seed %d (%.0f s so far)", i + 1, cells.size(),
                          StudyKindName(c_.kind), cell.method, cell.strategy,
                          cell.size == 0 ? std::string("all") : absl::StrCat(cell.size), cell.ArmLabel(), cell.seed,
                          elapsed));
      ASSIGN_OR_RETURN(json j, RunCell(cell));
      if (j.value("status", "") == "skipped") {
        ++outcome.skipped;
        Log(absl::StrCat("  not applicable: ", j.value("reason", "")));
      } else {
        ++outcome.ran;
        auto num = [](const json& v) { return v.is_number() ? v.get<double>() : std::nan(""); };
        const json& auc = j["macro"]["auroc"];
        Log(absl::StrFormat("  test macro AUROC %.4f [%.4f, %.4f] on %d cases%s", num(auc["value"]),
                            num(auc["lower"]), num(auc["upper"]), j.value("test_cases", 0),
                            j["seconds_per_epoch"].is_number()
                                ? absl::StrFormat("; %.2f s per epoch", j["seconds_per_epoch"].get<double>())
                                : std::string("; continued from an earlier run (not timed)")));
      }
      RETURN_IF_ERROR(WriteFileAtomically(path, j.dump() + "\n"));
      results.push_back(std::move(j));
    }
    StudyDescription d;
    d.kind = std::string(StudyKindName(c_.kind));
    for (const auto& s : c_.federation.sites) d.sites.push_back(s.site_id);
    d.architecture = base_.backbone_architecture;
    d.image_size = base_.train.image_size();
    d.epochs = c_.epochs;
    d.local_epochs = c_.local_epochs;
    d.bootstrap_resamples = c_.bootstrap_resamples;
    d.findings = findings_;
    d.test_cases = static_cast<int64_t>(test_->size());
    d.val_cases = static_cast<int64_t>(val_->size());
    d.strategies = c_.strategies;
    RETURN_IF_ERROR(WriteStudyOutputs(d, results, c_.federation.work_dir, &outcome));
    outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return outcome;
  }

 private:
  void Log(const std::string& line) const {
    if (log_) log_(line);
  }

  std::vector<Cell> Cells() const {
    std::vector<Cell> out;
    for (int64_t size : c_.sizes) {
      for (const auto& method : c_.methods) {
        for (const auto& strategy : c_.strategies) {
          for (const auto& arm : c_.arms) {
            for (int64_t seed : c_.seeds) {
              if (arm == "local") {
                for (const auto& s : c_.federation.sites) out.push_back({method, strategy, arm, s.site_id, size, seed});
              } else {
                out.push_back({method, strategy, arm, "", size, seed});
              }
            }
          }
        }
      }
    }
    return out;
  }

  // Each site's share of a federation-wide size.
  int64_t PerSiteCap(int64_t size) const {
    if (size <= 0) return 0;
    const auto n = static_cast<int64_t>(c_.federation.sites.size());
    return (size + n - 1) / n;
  }

  // The cell's job: the base job with the cell's method, strategy, seed and
  // per-site cap.
  absl::StatusOr<std::string> CellJob(const Cell& cell) const {
    std::vector<std::pair<std::string, std::string>> a = {
        {"model.method", absl::StrCat("\"", cell.method, "\"")},
        {"job.strategy", absl::StrCat("\"", cell.strategy, "\"")},
        {"job.name", absl::StrCat("\"study-", cell.Key(), "\"")},
        {"job.rounds", absl::StrCat(std::max(1, c_.epochs / c_.local_epochs))},
        {"job.min_sites", absl::StrCat(c_.federation.sites.size())},
        {"job.sites", ""},
        {"job.baselines", "false"},
        {"train.local_epochs", absl::StrCat(c_.local_epochs)},
        {"job.seed", absl::StrCat(cell.seed)},
        {"train.max_train_samples", absl::StrCat(PerSiteCap(cell.size))},
    };
    if (cell.strategy != base_.strategy.name) a.push_back({"strategy", ""});  // the base strategy's settings
    if (cell.strategy != "fedprox") a.push_back({"train.fedprox_mu", ""});
    for (const auto& [method, lr] : c_.learning_rates) {
      if (method == cell.method) a.push_back({"train.learning_rate", absl::StrFormat("%.17g", lr)});
    }
    return PatchJob(c_.federation.job_toml, a);
  }

  absl::StatusOr<json> RunCell(const Cell& cell) {
    json j{{"key", cell.Key()}, {"method", cell.method}, {"strategy", cell.strategy}, {"arm", cell.arm},
           {"site", cell.site},  {"size", cell.size},     {"seed", cell.seed}};
    ASSIGN_OR_RETURN(std::string job_toml, CellJob(cell));
    auto job = coordinator::ParseJobSpec(job_toml, absl::StrCat("the job of cell ", cell.Key()));
    if (!job.ok()) {
      j["status"] = "skipped";
      j["reason"] = std::string(job.status().message());
      return j;
    }
    const int64_t cap = PerSiteCap(cell.size);
    const auto seed = static_cast<uint64_t>(cell.seed);
    int64_t train_images = 0;
    std::vector<std::unique_ptr<site::CacheDataset>> train_parts;
    for (const auto& s : c_.federation.sites) {
      if (cell.arm == "local" && s.site_id != cell.site) continue;
      // The executor's subset: nested, seeded by the job's seed.
      ASSIGN_OR_RETURN(auto d, OpenSplit(s, findings_, "train", cap, seed));
      train_images += static_cast<int64_t>(d->size());
      train_parts.push_back(std::move(d));
    }
    j["train_images"] = train_images;
    j["epochs"] = c_.epochs;
    const VirtualSite& any = c_.federation.sites.front();
    ASSIGN_OR_RETURN(auto model, BuildModel(*job, any, seed));
    const auto start = std::chrono::steady_clock::now();
    if (cell.arm == "federated") {
      SimulationConfig sc = c_.federation;
      sc.job_toml = job_toml;
      sc.job_source = absl::StrCat("the job of cell ", cell.Key());
      sc.work_dir = c_.federation.work_dir + "/runs/" + cell.Key();
      sc.synth.reset();  // the sites are prepared
      sc.bootstrap_resamples = 0;  // the sites' own final evaluation is not what the study reports
      ASSIGN_OR_RETURN(SimulationResult run, Simulate(sc, [this](const std::string& line) { Log("  " + line); }));
      if (run.status.state() != v1::JOB_STATE_SUCCEEDED) {
        return absl::AbortedError(absl::StrCat("cell ", cell.Key(), ": the simulated job ended ",
                                               run.status.reason().empty() ? "without success" : run.status.reason(),
                                               " (its state: ", sc.work_dir, "/state)"));
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      j["train_seconds"] = run.resumed ? json(nullptr) : json(seconds);
      j["seconds_per_epoch"] = run.resumed ? json(nullptr) : json(seconds / c_.epochs);
      // The best round by pooled validation macro AUROC.
      int best = 0;
      double best_auroc = -1;
      for (size_t v = 1; v < run.version_files.size(); ++v) {
        ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(run.version_files[v]));
        RETURN_IF_ERROR(model->SetGlobalState(f.ReadAll()));
        ASSIGN_OR_RETURN(Scored on_val, site::ScoreDataset(*model, *val_));
        const double auc = metrics::MacroAuroc(findings_.size(), on_val.scores, on_val.labels);
        if (std::isfinite(auc) && auc > best_auroc) {
          best_auroc = auc;
          best = static_cast<int>(v);
        }
      }
      if (best == 0) return absl::AbortedError(absl::StrCat("cell ", cell.Key(), ": no round to evaluate"));
      ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::Open(run.version_files[static_cast<size_t>(best)]));
      RETURN_IF_ERROR(model->SetGlobalState(f.ReadAll()));
      j["best_epoch"] = best * c_.local_epochs;
      j["best_round"] = best;
    } else {
      // Pooled or local-only: the same model and optimiser from the job's
      // version 0, trained in one place with the best epoch kept.
      ASSIGN_OR_RETURN(TensorMap initial, coordinator::InitialWeights(*job));
      RETURN_IF_ERROR(model->SetGlobalState(initial));
      ConcatDataset train(std::move(train_parts));
      ASSIGN_OR_RETURN(auto val, Pooled(c_.federation.sites, findings_, "val", cell.arm == "local" ? cell.site : ""));
      model::TrainOptions to = fl::TrainOptionsFor(job->train, seed);
      to.epochs = c_.epochs;
      to.keep_best_epoch = true;
      to.max_train_samples = 0;
      if (to.class_weighting == model::ClassWeighting::kGiven) to.class_weighting = model::ClassWeighting::kOwn;
      if (train.size() == 0) return absl::FailedPreconditionError(absl::StrCat("cell ", cell.Key(), ": no images"));
      ASSIGN_OR_RETURN(model::TrainResult tr,
                       model->Train(train, *val, to, [this](const model::EpochReport& e) {
                         Log(absl::StrFormat("  epoch %d/%d loss %.4f val macro AUROC %.4f (%.1f s)", e.epoch,
                                             e.epochs, e.train_loss, e.val_auroc, e.seconds));
                       }));
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      double epoch_seconds = 0;
      for (const auto& e : tr.epochs) epoch_seconds += e.seconds;
      j["train_seconds"] = seconds;
      j["seconds_per_epoch"] = tr.epochs.empty() ? 0.0 : epoch_seconds / static_cast<double>(tr.epochs.size());
      j["best_epoch"] = tr.best_epoch;
    }
    ASSIGN_OR_RETURN(json ev, EvaluateCell(*model, findings_, *val_, *test_, c_.bootstrap_resamples, seed));
    j.update(ev);
    j["status"] = "done";
    return j;
  }

  StudyConfig c_;
  SimLog log_;
  coordinator::JobSpec base_;
  std::vector<std::string> findings_;
  std::unique_ptr<ConcatDataset> val_, test_;
};

}  // namespace

std::string_view StudyKindName(StudyKind kind) {
  switch (kind) {
    case StudyKind::kScaling: return "scaling";
    case StudyKind::kMethods: return "methods";
    case StudyKind::kStrategies: return "strategies";
  }
  return "?";
}

absl::StatusOr<StudyConfig> LoadStudyConfig(const std::string& path, StudyKind kind) {
  StudyConfig c;
  c.kind = kind;
  ASSIGN_OR_RETURN(c.federation, LoadSimulationConfig(path, /*study=*/true));
  ASSIGN_OR_RETURN(Config root, Config::LoadFile(path));
  ASSIGN_OR_RETURN(Config s, root.GetTableOrEmpty("study"));
  RETURN_IF_ERROR(s.RejectUnknownKeys({"sizes", "arms", "methods", "strategies", "seeds", "epochs", "local_epochs",
                                       "bootstrap_resamples", "learning_rate"}));
  toml::table doc = toml::parse_file(path);  // syntax checked above
  switch (kind) {
    case StudyKind::kScaling: {
      ASSIGN_OR_RETURN(c.sizes, ReadInts(doc, path, "sizes", {100, 250, 500, 1000}, 1));
      ASSIGN_OR_RETURN(c.seeds, ReadInts(doc, path, "seeds", {0}, 0));
      c.arms = {"pooled", "federated", "local"};
      break;
    }
    case StudyKind::kMethods: {
      ASSIGN_OR_RETURN(c.sizes, ReadInts(doc, path, "sizes", {50, 0}, 0));
      ASSIGN_OR_RETURN(c.seeds, ReadInts(doc, path, "seeds", {0}, 0));
      c.arms = {"pooled", "federated", "local"};
      c.methods = {"lora", "bitfit", "linear_probe", "full"};
      break;
    }
    case StudyKind::kStrategies: {
      ASSIGN_OR_RETURN(c.sizes, ReadInts(doc, path, "sizes", {0}, 0));
      ASSIGN_OR_RETURN(c.seeds, ReadInts(doc, path, "seeds", {0, 1, 2}, 0));
      c.arms = {"federated"};
      c.strategies = {"fedavg", "fedprox", "ffa-lora", "fedadam"};
      break;
    }
  }
  absl::Status error;
  c.arms = ReadList(s, "arms", c.arms, &error);
  c.methods = ReadList(s, "methods", c.methods, &error);
  c.strategies = ReadList(s, "strategies", c.strategies, &error);
  RETURN_IF_ERROR(error);
  for (const auto& a : c.arms) {
    if (!kArms.contains(a)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": key 'study.arms': \"", a, "\" is not an arm (pooled, federated, local)"));
    }
  }
  if (c.arms.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": key 'study.arms' is empty"));
  for (const auto& m : c.methods) {
    if (!kMethods.contains(m)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": key 'study.methods': \"", m,
                                                     "\" is not a method (lora, bitfit, linear_probe, full)"));
    }
  }
  if (kind == StudyKind::kStrategies && c.seeds.size() < 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": key 'study.seeds': a strategies study compares over at least three seeds (", c.seeds.size(),
        " given)"));
  }
  if (kind == StudyKind::kStrategies && c.strategies.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": key 'study.strategies': name at least two strategies to compare"));
  }
  ASSIGN_OR_RETURN(int64_t epochs, s.GetIntInRange("epochs", 1, 1000, 4));
  c.epochs = static_cast<int>(epochs);
  ASSIGN_OR_RETURN(int64_t le, s.GetIntInRange("local_epochs", 1, 1000, 1));
  c.local_epochs = static_cast<int>(le);
  if (c.epochs % c.local_epochs != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": key 'study.local_epochs': ", c.local_epochs,
                                                   " does not divide study.epochs (", c.epochs,
                                                   "); federated runs have epochs / local_epochs rounds"));
  }
  ASSIGN_OR_RETURN(int64_t boot, s.GetIntInRange("bootstrap_resamples", 0, 100000, 200));
  c.bootstrap_resamples = static_cast<int>(boot);
  if (const auto* lr = doc["study"]["learning_rate"].as_table()) {
    for (const auto& [k, v] : *lr) {
      const std::string method(k.str());
      auto x = v.value<double>();
      if (!kMethods.contains(method) || !x || *x <= 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": key 'study.learning_rate.", method, "': a positive learning rate for lora, bitfit, linear_probe "
                                                         "or full"));
      }
      c.learning_rates.emplace_back(method, *x);
    }
  }
  return c;
}

absl::StatusOr<StudyOutcome> RunStudy(StudyConfig config, const SimLog& log) {
  Study study(std::move(config), log);
  return study.Run();
}

}  // namespace fedtune::sim
