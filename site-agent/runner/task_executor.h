// Runs one task from the coordinator on this site's data, with no network:
// checks the backbone, builds the model the task describes, loads the global
// weights, and either trains (validation metrics of the incoming model before,
// of the result after) or evaluates on the requested split. What it returns is
// exactly what leaves the site: trainable weights and aggregate metrics, with
// counts below k suppressed.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/metrics/evaluation.h"
#include "common/model/classifier.h"
#include "fedtune/v1/federation.pb.h"

namespace fedtune::site {

struct ExecutorOptions {
  std::string site_id;
  std::string workspace;
  std::string backbone_path;  // empty: random backbone (refused unless a job expects exactly that)
  std::string device = "auto";
  int threads = 0;
  int k_threshold = 5;
  int bootstrap_resamples = 1000;
  // Disclosure control ([stats] in site.toml), whatever a task asks: a
  // training task runs on at least this many images (never fewer than k),
  // and a job gets at most this many evaluation tasks here.
  int64_t min_train_images = 20;
  int max_evaluations_per_job = 32;
  // Whether this site's local-only baseline may be evaluated at other sites
  // (when not, its weights carry fl::kHomeOnlyKey naming this site).
  bool share_local_model = false;
};

struct TaskOutcome {
  v1::UpdateHeader header;  // task/job/round ids set; failure_reason when the task could not run
  std::string weights;      // safetensors bytes (Train), empty otherwise
};

using TaskProgress = std::function<void(const v1::ProgressReport&)>;

class TaskExecutor {
 public:
  // Hashes the backbone file once.
  static absl::StatusOr<TaskExecutor> Create(const ExecutorOptions& options);

  const std::string& backbone_sha256() const { return backbone_sha256_; }
  // What the site tells the coordinator of itself when it joins.
  v1::Capabilities Capabilities() const;

  // `global` is the safetensors image of the task's weights. Problems of the
  // task itself (backbone mismatch, unknown finding, no training images...)
  // come back as header.failure_reason for the coordinator to record; a
  // non-OK status means the run was cancelled or the process failed.
  absl::StatusOr<TaskOutcome> Run(const v1::Task& task, const std::string& global, const TaskProgress& progress,
                                  const std::atomic<bool>* cancel);

 private:
  ExecutorOptions options_;
  std::string backbone_sha256_;
};

// A model's probabilities on every image of `data` and the images' labels,
// both row-major [images x findings] (labels as model::ImageDataset gives them).
struct ScoredDataset {
  std::vector<double> scores;
  std::vector<float> labels;
};
absl::StatusOr<ScoredDataset> ScoreDataset(model::Classifier& model, const model::ImageDataset& data);

// Metrics as shipped: per finding the metrics with their intervals, the
// confusion counts at the chosen threshold and class-conditional score
// histograms (for pooling at the coordinator); everything withheld
// (suppressed) when either class has fewer than k cases. `scores` and
// `labels` are [cases x findings], as given to metrics::Evaluate.
v1::EvaluationMetrics ToProto(const metrics::EvaluationResult& r, std::span<const double> scores,
                              std::span<const float> labels, std::string_view split, int64_t examples,
                              int k_threshold);

}  // namespace fedtune::site
