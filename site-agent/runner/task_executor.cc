#include "site-agent/runner/task_executor.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <map>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/core/status.h"
#include "common/core/version.h"
#include "common/fl/task_spec.h"
#include "common/metrics/pooling.h"
#include "site-agent/ingest/workspace_index.h"
#include "site-agent/runner/cache_dataset.h"
#include "site-agent/runner/disclosure.h"
#include "site-agent/runner/evaluation_scores.h"

namespace fedtune::site {
namespace {

std::string Short(const std::string& hex) { return hex.empty() ? "(none)" : hex.substr(0, 16) + "…"; }

std::string MacroText(const v1::EvaluationMetrics& m) {
  return m.has_macro_auroc() ? absl::StrFormat("%.4f", m.macro_auroc()) : std::string("n/a");
}

}  // namespace

absl::StatusOr<ScoredDataset> ScoreDataset(model::Classifier& model, const model::ImageDataset& data) {
  ScoredDataset s;
  ASSIGN_OR_RETURN(s.scores, model.Predict(data, 64));
  s.labels.resize(data.size() * data.num_findings());
  for (size_t i = 0; i < data.size(); ++i) {
    RETURN_IF_ERROR(data.GetLabels(i, std::span<float>(s.labels.data() + i * data.num_findings(), data.num_findings())));
  }
  return s;
}

v1::EvaluationMetrics ToProto(const metrics::EvaluationResult& r, std::span<const double> scores,
                              std::span<const float> labels, std::string_view split, int64_t examples,
                              int k_threshold) {
  const size_t nf = r.findings.size();
  v1::EvaluationMetrics m;
  m.set_split(std::string(split));
  m.set_examples(examples);
  // A metric is set only when it is defined: absent, never 0, otherwise.
  auto set = [](double v, auto setter) {
    if (std::isfinite(v)) setter(v);
  };
  for (size_t fi = 0; fi < nf; ++fi) {
    const metrics::FindingResult& f = r.findings[fi];
    auto* p = m.add_findings();
    p->set_finding(f.finding);
    if (f.positives < k_threshold || f.negatives < k_threshold) {
      p->set_suppressed(true);
      continue;
    }
    p->set_positives(f.positives);
    p->set_negatives(f.negatives);
    if (!f.evaluable) continue;
    metrics::ScoreHistogram hist;
    metrics::ConfusionCounts cc;
    for (size_t i = 0; i * nf + fi < labels.size(); ++i) {
      const float y = labels[i * nf + fi];
      if (y != 0.0f && y != 1.0f) continue;
      const double sc = scores[i * nf + fi];
      hist.Add(sc, y == 1.0f);
      const bool predicted = sc >= f.threshold;
      if (y == 1.0f) {
        (predicted ? cc.tp : cc.fn)++;
      } else {
        (predicted ? cc.fp : cc.tn)++;
      }
    }
    set(f.auroc, [&](double v) { p->set_auroc(v); });
    set(f.auprc, [&](double v) { p->set_auprc(v); });
    set(f.sensitivity, [&](double v) { p->set_sensitivity(v); });
    set(f.specificity, [&](double v) { p->set_specificity(v); });
    set(f.f1, [&](double v) { p->set_f1(v); });
    set(f.mcc, [&](double v) { p->set_mcc(v); });
    set(f.threshold, [&](double v) { p->set_threshold(v); });
    set(f.auroc_ci.lower, [&](double v) { p->set_auroc_ci_lower(v); });
    set(f.auroc_ci.upper, [&](double v) { p->set_auroc_ci_upper(v); });
    // Bootstrap intervals exist only when resampling was asked for.
    if (f.auprc_ci.lower != 0 || f.auprc_ci.upper != 0) {
      set(f.auprc_ci.lower, [&](double v) { p->set_auprc_ci_lower(v); });
      set(f.auprc_ci.upper, [&](double v) { p->set_auprc_ci_upper(v); });
      set(f.f1_ci.lower, [&](double v) { p->set_f1_ci_lower(v); });
      set(f.f1_ci.upper, [&](double v) { p->set_f1_ci_upper(v); });
      set(f.mcc_ci.lower, [&](double v) { p->set_mcc_ci_lower(v); });
      set(f.mcc_ci.upper, [&](double v) { p->set_mcc_ci_upper(v); });
    }
    // Proportions get Wilson score intervals (exact counts, no resampling).
    const metrics::Interval sens = metrics::WilsonInterval(cc.tp, cc.tp + cc.fn);
    const metrics::Interval spec = metrics::WilsonInterval(cc.tn, cc.tn + cc.fp);
    set(sens.lower, [&](double v) { p->set_sensitivity_ci_lower(v); });
    set(sens.upper, [&](double v) { p->set_sensitivity_ci_upper(v); });
    set(spec.lower, [&](double v) { p->set_specificity_ci_lower(v); });
    set(spec.upper, [&](double v) { p->set_specificity_ci_upper(v); });
    p->set_tp(cc.tp);
    p->set_fp(cc.fp);
    p->set_tn(cc.tn);
    p->set_fn(cc.fn);
    for (int64_t v : hist.positives) p->add_logit_hist_pos(v);
    for (int64_t v : hist.negatives) p->add_logit_hist_neg(v);
    for (const auto& pt : f.roc) {
      p->add_roc_fpr(static_cast<float>(pt.fpr));
      p->add_roc_tpr(static_cast<float>(pt.tpr));
    }
  }
  // Whatever the task asked: no shared count rests on fewer than k cases,
  // and the macro mean covers only the findings still shared.
  ProtectEvaluation(&m, k_threshold);
  return m;
}

absl::StatusOr<TaskExecutor> TaskExecutor::Create(const ExecutorOptions& options) {
  TaskExecutor e;
  e.options_ = options;
  if (!options.backbone_path.empty()) {
    ASSIGN_OR_RETURN(e.backbone_sha256_, Sha256FileHex(options.backbone_path));
  }
  return e;
}

v1::Capabilities TaskExecutor::Capabilities() const {
  v1::Capabilities caps;
  caps.set_software_version(absl::StrCat("fedtune ", FedtuneVersion()));
  caps.set_backbone_sha256(backbone_sha256_);
  caps.set_device(options_.device == "cuda" ? v1::DEVICE_KIND_CUDA : v1::DEVICE_KIND_CPU);
  caps.set_device_name(options_.device);
  caps.set_cpu_threads(static_cast<int32_t>(std::thread::hardware_concurrency()));
  return caps;
}

absl::StatusOr<TaskOutcome> TaskExecutor::Run(const v1::Task& task, const std::string& global,
                                              const TaskProgress& progress, const std::atomic<bool>* cancel) {
  TaskOutcome out;
  out.header.set_task_id(task.task_id());
  out.header.set_job_id(task.job_id());
  out.header.set_round(task.round());
  // `permanent`: retrying cannot help (another backbone, a model this site
  // cannot build), so the coordinator stops selecting this site for the job.
  auto fail = [&](std::string reason, bool permanent = false) -> absl::StatusOr<TaskOutcome> {
    spdlog::warn("task {} (job {}, round {}) cannot run here: {}", task.task_id(), task.job_id(), task.round(),
                 reason);
    out.header.set_failure_reason(std::move(reason));
    out.header.set_failure_permanent(permanent);
    return out;
  };
  const bool train = task.has_train();
  if (!train && !task.has_evaluate()) return fail("task has neither train nor evaluate (newer coordinator?)");
  const std::string& want_sha = train ? task.train().backbone_sha256() : task.evaluate().backbone_sha256();
  const std::string& arch = train ? task.train().backbone_architecture() : task.evaluate().backbone_architecture();
  const v1::TrainConfig& config = train ? task.train().config() : task.evaluate().config();
  if (want_sha != backbone_sha256_) {
    return fail(absl::StrCat("backbone mismatch: the job expects base weights with SHA-256 ", Short(want_sha),
                             ", this site's [training] backbone has ", Short(backbone_sha256_)),
                /*permanent=*/true);
  }
  auto spec = fl::ModelSpecFor(arch, config);
  if (!spec.ok()) return fail(std::string(spec.status().message()), /*permanent=*/true);

  model::ClassifierOptions mo;
  mo.device = options_.device;
  mo.threads = options_.threads;
  mo.seed = static_cast<uint64_t>(config.seed());
  mo.backbone_path = options_.backbone_path;
  auto model = model::Classifier::Create(*spec, mo);
  if (!model.ok()) return fail(absl::StrCat("model: ", model.status().message()));
  auto weights = SafetensorsFile::FromBytes(global);
  if (!weights.ok()) return fail(absl::StrCat("global weights: ", weights.status().message()));
  // Another site's local-only model that its site keeps to itself.
  if (!train) {
    auto home = weights->metadata().find(fl::kHomeOnlyKey);
    if (home != weights->metadata().end() && home->second != options_.site_id) {
      return fail(absl::StrCat("this is the local-only model of ", home->second,
                               ", which that site keeps to itself ([stats] share_local_model = false there): "
                               "not evaluated here"));
    }
  }
  const bool trains_backbone =
      spec->method == model::FineTuneMethod::kBitFit || spec->method == model::FineTuneMethod::kFull;
  if (trains_backbone && !weights->metadata().count(fl::kGlobalStateFormatKey)) {
    return fail("these global weights come from a coordinator older than this site agent (backbone tensors as "
                "values, not as differences from the base weights): resubmit the job to the upgraded coordinator");
  }
  if (auto st = (*model)->SetGlobalState(weights->ReadAll()); !st.ok()) {
    return fail(absl::StrCat("global weights do not fit the model: ", st.message()));
  }
  if (train && config.class_weights() == "federation" && config.pos_weight_size() != config.findings_size()) {
    return fail(absl::StrCat("the task asks for the federation's class weights but carries ", config.pos_weight_size(),
                             " for ", config.findings_size(), " findings"));
  }

  // Every task of a job reads the data as it was when the job's first task
  // arrived: images and labels that come later join the next job.
  auto snapshot = ingest::TakeJobSnapshot(options_.workspace, task.job_id());
  if (!snapshot.ok()) return fail(std::string(snapshot.status().message()));
  CacheDatasetOptions dso;
  dso.findings = spec->findings;
  dso.split = "val";
  dso.as_of = *snapshot;
  auto val = CacheDataset::Open(options_.workspace, dso);
  if (!val.ok()) return fail(std::string(val.status().message()));
  metrics::EvaluationOptions eo;
  eo.seed = static_cast<uint64_t>(config.seed());

  // Per-finding thresholds come from the validation split (Youden).
  auto evaluate = [&](const model::ImageDataset& data, std::string_view split, int bootstrap,
                      ScoredDataset* scored = nullptr) -> absl::StatusOr<v1::EvaluationMetrics> {
    ASSIGN_OR_RETURN(ScoredDataset on_val, ScoreDataset(**model, **val));
    ASSIGN_OR_RETURN(std::vector<double> thresholds,
                     metrics::ChooseThresholds(spec->findings, on_val.scores, on_val.labels, eo));
    ScoredDataset on_data;
    if (&data == val->get()) {
      on_data = std::move(on_val);
    } else {
      ASSIGN_OR_RETURN(on_data, ScoreDataset(**model, data));
    }
    metrics::EvaluationOptions o = eo;
    o.bootstrap_resamples = bootstrap;
    ASSIGN_OR_RETURN(metrics::EvaluationResult r,
                     metrics::Evaluate(spec->findings, on_data.scores, on_data.labels, thresholds, o));
    v1::EvaluationMetrics m = ToProto(r, on_data.scores, on_data.labels, split, static_cast<int64_t>(data.size()),
                                      options_.k_threshold);
    if (scored != nullptr) *scored = std::move(on_data);
    return m;
  };
  auto report = [&](std::string_view phase, int epoch, int epochs, double loss, double auroc) {
    if (!progress) return;
    v1::ProgressReport p;
    p.set_task_id(task.task_id());
    p.set_phase(std::string(phase));
    p.set_epoch(epoch);
    p.set_epochs(epochs);
    p.set_train_loss(loss);
    p.set_val_auroc(auroc);
    progress(p);
  };

  if (!train) {
    // Each evaluation tells the coordinator something about this site's
    // cases: a job gets a bounded number of them.
    auto count = CountEvaluation(options_.workspace, task.job_id());
    if (!count.ok()) return fail(absl::StrCat("evaluation count: ", count.status().message()));
    if (*count > options_.max_evaluations_per_job) {
      return fail(absl::StrCat("this site evaluates at most ", options_.max_evaluations_per_job,
                               " models per job ([stats] max_evaluations_per_job); this job asked for more"),
                  /*permanent=*/true);
    }
    const std::string split = task.evaluate().split().empty() ? "test" : task.evaluate().split();
    if (split != "val" && split != "test") return fail(absl::StrCat("unknown split \"", split, "\""));
    dso.split = split;
    auto data = CacheDataset::Open(options_.workspace, dso);
    if (!data.ok()) return fail(std::string(data.status().message()));
    if ((*data)->size() == 0) return fail(absl::StrCat("this site has no ", split, " images"));
    // The number of images evaluated is shared: never a count below k.
    if (static_cast<int64_t>((*data)->size()) < options_.k_threshold) {
      return fail(absl::StrCat("this site has fewer than k (", options_.k_threshold, ") ", split,
                               " images: an evaluation would share their number"),
                  /*permanent=*/true);
    }
    report("evaluate", 0, 0, 0, std::nan(""));
    ScoredDataset scored;
    auto m = evaluate(**data, split, options_.bootstrap_resamples, &scored);
    if (!m.ok()) return fail(absl::StrCat("evaluation: ", m.status().message()));
    // The scores stay here; the federated model and each local-only model
    // are compared on the same cases (paired DeLong) once both are scored.
    ScoredCases cases;
    cases.job_id = task.job_id();
    cases.model_label = task.evaluate().model_label().empty() ? "federated" : task.evaluate().model_label();
    cases.split = split;
    cases.cases_sha256 = CasesSha256((*data)->image_ids());
    cases.findings = spec->findings;
    cases.scores = std::move(scored.scores);
    cases.labels = std::move(scored.labels);
    if (auto st = SaveScoredCases(options_.workspace, cases); !st.ok()) {
      spdlog::warn("task {}: scores not kept for paired tests: {}", task.task_id(), std::string(st.message()));
    }
    auto paired = CompareWithOtherModels(options_.workspace, cases, options_.k_threshold);
    if (paired.ok()) {
      // Only for the findings this evaluation shares: a paired test's case
      // count would give a withheld finding's counts back.
      std::set<std::string> shared;
      for (const auto& f : m->findings()) {
        if (!f.suppressed()) shared.insert(f.finding());
      }
      for (auto& p : *paired) {
        if (shared.contains(p.finding())) *m->add_paired() = std::move(p);
      }
    }
    *out.header.mutable_evaluation() = *m;
    // The same model on validation: how the coordinator ranks versions for
    // promotion and pools the decision thresholds (never on test).
    if ((*val)->size() > 0) {
      auto vm = evaluate(**val, "val", 0);
      if (vm.ok()) *out.header.mutable_val_after() = *vm;
    }
    spdlog::info("task {}: {} macro AUROC {} on {} images{}", task.task_id(), split, MacroText(*m), (*data)->size(),
                 m->paired_size() > 0 ? absl::StrCat(", ", m->paired_size(), " paired comparisons") : "");
    return out;
  }

  dso.split = "train";
  dso.labelled_only = true;
  dso.max_images = config.max_train_samples();
  dso.subset_seed = static_cast<uint64_t>(config.seed());
  auto train_data = CacheDataset::Open(options_.workspace, dso);
  if (!train_data.ok()) return fail(std::string(train_data.status().message()));
  if ((*train_data)->size() == 0) return fail("this site has no training images");
  // An update trained on a handful of images can give them back: whatever
  // the task's max_train_samples, train on at least this many.
  const int64_t min_images = std::max<int64_t>(options_.min_train_images, options_.k_threshold);
  if (static_cast<int64_t>((*train_data)->size()) < min_images) {
    return fail(absl::StrCat("this site trains on at least ", min_images,
                             " images per task ([stats] min_train_images); this task would train on fewer (",
                             config.max_train_samples() > 0 && config.max_train_samples() < min_images
                                 ? "its max_train_samples is below that)"
                                 : "this site has fewer labelled training images)"),
                /*permanent=*/true);
  }

  report("validate", 0, config.local_epochs(), 0, std::nan(""));
  if ((*val)->size() > 0) {
    auto before = evaluate(**val, "val", 0);
    if (!before.ok()) return fail(absl::StrCat("validation: ", before.status().message()));
    *out.header.mutable_val_before() = *before;
  }
  model::TrainOptions to = fl::TrainOptionsFor(config, std::hash<std::string>{}(options_.site_id) + task.round());
  to.max_train_samples = 0;  // the subset was chosen above, nested
  const auto start = std::chrono::steady_clock::now();
  // Progress reports a validation macro AUROC over the findings this site
  // shares for its validation split only.
  std::vector<bool> shared_val(spec->findings.size(), false);
  {
    const size_t nf = spec->findings.size();
    std::vector<float> labels((*val)->size() * nf);
    for (size_t i = 0; i < (*val)->size(); ++i) {
      if (auto st = (*val)->GetLabels(i, std::span<float>(labels.data() + i * nf, nf)); !st.ok()) {
        return fail(absl::StrCat("validation labels: ", st.message()));
      }
    }
    shared_val = SharedFindings(labels, nf, options_.k_threshold);
  }
  auto result = (*model)->Train(
      **train_data, **val, to,
      [&](const model::EpochReport& e) {
        report("train", e.epoch, e.epochs, e.train_loss, SharedMacro(e.val_auroc_per_finding, shared_val));
      },
      cancel);
  if (!result.ok()) {
    if (result.status().code() == absl::StatusCode::kCancelled) return result.status();
    return fail(absl::StrCat("training: ", result.status().message()));
  }
  out.header.set_train_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  out.header.set_num_examples(result->examples);
  if (!result->epochs.empty()) {
    out.header.set_train_loss(result->epochs[static_cast<size_t>(std::max(result->best_epoch, 1) - 1)].train_loss);
  }
  if ((*val)->size() > 0) {
    auto after = evaluate(**val, "val", 0);
    if (!after.ok()) return fail(absl::StrCat("validation: ", after.status().message()));
    *out.header.mutable_val_after() = *after;
  }
  // A round's update is what training changed; a local-only baseline is a
  // whole model of its own (evaluated at every site), so it carries the
  // full global state (FFA-LoRA's frozen A included).
  const bool local_model = task.train().weights().model_label().rfind("local:", 0) == 0;
  auto state = local_model ? (*model)->GlobalState() : (*model)->UpdateState();
  if (!state.ok()) return state.status();
  SafetensorsMetadata metadata = {{"format", "pt"},
                                  {fl::kGlobalStateFormatKey, fl::kGlobalStateFormat}};
  if (local_model && !options_.share_local_model) metadata[fl::kHomeOnlyKey] = options_.site_id;
  ASSIGN_OR_RETURN(out.weights, SerializeSafetensors(*state, metadata));
  out.header.set_total_size(static_cast<int64_t>(out.weights.size()));
  out.header.set_sha256(Sha256Hex(out.weights));
  spdlog::info("task {}: trained {} epochs on {} images in {:.1f} s, val macro AUROC {} -> {}", task.task_id(),
               result->epochs.size(), result->examples, out.header.train_seconds(), MacroText(out.header.val_before()),
               MacroText(out.header.val_after()));
  return out;
}

}  // namespace fedtune::site
