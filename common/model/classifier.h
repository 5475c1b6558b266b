// The model as the rest of fedtune sees it: a ViT backbone, a fine-tuning
// method and a multi-label head, trained and evaluated on ImageDatasets.
// Torch-free header; LibTorch exceptions are caught inside and returned as
// absl::Status.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/core/tensor_map.h"
#include "common/model/dataset.h"
#include "common/model/model_config.h"

namespace fedtune::model {

// Random resized crop + small rotation + brightness/contrast, applied to
// training batches only.
struct AugmentOptions {
  bool enabled = true;
  double min_area = 0.8;      // crop keeps at least this fraction of the image
  double max_aspect = 4.0 / 3; // crop aspect ratio in [1/max_aspect, max_aspect]
  double max_rotation_deg = 7;
  double brightness = 0.1;    // additive, uniform in [-b, b]
  double contrast = 0.1;      // multiplicative, uniform in [1-c, 1+c]
};

// How the loss weighs positive labels (BCE pos_weight per finding).
enum class ClassWeighting {
  kOwn,    // negatives / positives over this training set (capped at 100)
  kGiven,  // TrainOptions::pos_weight: the same objective at every site of a federation
  kNone,   // every label counts once
};

struct TrainOptions {
  int epochs = 3;
  int batch_size = 16;
  double learning_rate = 1e-3;
  double weight_decay = 0.01;
  double warmup_fraction = 0.1;  // of all steps; then cosine decay to 0
  double grad_clip_norm = 1.0;   // 0 disables clipping
  uint64_t seed = 0;
  // FedProx: adds mu/2 * ||w - w_start||^2 over the trainable tensors, w_start
  // being the trainable state when Train() starts (the global model). 0 = off.
  double fedprox_mu = 0;
  int64_t max_train_samples = 0;  // 0 = all
  ClassWeighting class_weighting = ClassWeighting::kOwn;
  std::vector<double> pos_weight;  // per finding, with kGiven
  int prefetch_batches = 3;       // batches assembled ahead on a background thread
  // Return the weights of the epoch with the best validation macro AUROC
  // (true), or of the last epoch (false: what FedAvg expects of a round; a
  // site's small validation split would otherwise throw progress away).
  bool keep_best_epoch = true;
  AugmentOptions augment;
};

struct EpochReport {
  int epoch = 0;  // 1-based
  int epochs = 0;
  int64_t steps = 0;  // optimizer steps so far
  double train_loss = 0;
  double val_auroc = 0;  // macro AUROC on the validation set (NaN without one)
  std::vector<double> val_auroc_per_finding;  // each finding's (NaN where undefined); empty without a set
  double seconds = 0;
  double images_per_second = 0;
};

struct TrainResult {
  std::vector<EpochReport> epochs;
  int best_epoch = 0;  // whose weights the model now holds
  double best_val_auroc = 0;
  int64_t examples = 0;  // training images per epoch (the FedAvg weight)
};

using ProgressCallback = std::function<void(const EpochReport&)>;

struct ClassifierOptions {
  // "cpu", "cuda" or "auto" (CUDA when LibTorch sees a GPU).
  std::string device = "auto";
  // bfloat16 activations and frozen weights on CUDA (trainable weights and
  // optimizer state stay float32); see PlaceOnDevice in vit.h.
  bool bf16 = true;
  // CPU threads for LibTorch; 0 = every usable core.
  int threads = 0;
  uint64_t seed = 0;
  // Backbone weights (safetensors, any layout of checkpoint.h); empty keeps the
  // random initialization (tests, the coordinator's version 0). Position
  // embeddings of another grid are resampled once to the model's image size.
  std::string backbone_path;
};

class Classifier {
 public:
  // Builds the model, loads the backbone when one is given, applies the
  // fine-tuning method and moves the model to its device.
  static absl::StatusOr<std::unique_ptr<Classifier>> Create(const ModelSpec& spec,
                                                            const ClassifierOptions& options);
  ~Classifier();

  const ModelSpec& spec() const;
  // Hex SHA-256 of the backbone file ("" when randomly initialized).
  const std::string& backbone_sha256() const;
  std::string device() const;  // "cpu" or "cuda:0"

  // The trainable state under PEFT names (float32), as values.
  absl::StatusOr<TensorMap> TrainableState();
  absl::Status SetTrainableState(const TensorMap& state);
  // The global state (checkpoint.h): what federation ships. Adapters and head
  // as values, trained backbone tensors as differences from the base weights
  // this model was created with. UpdateState() is the part training changes
  // (all of it but FFA-LoRA's frozen A): what a site sends back.
  absl::StatusOr<TensorMap> GlobalState();
  absl::Status SetGlobalState(const TensorMap& state);
  absl::StatusOr<TensorMap> UpdateState();
  // adapter_model.safetensors + adapter_config.json.
  absl::Status SaveAdapter(const std::string& dir);
  // A transformers Dinov2ForImageClassification directory of the whole
  // model (hf_export.h): how BitFit, linear-probe and full fine-tuning
  // results are exported. FAILED_PRECONDITION for what it cannot express.
  absl::Status SaveHuggingFace(const std::string& dir);
  // The backbone weights in Hugging Face Dinov2 layout, float32 (adapters
  // excluded). Used to hand every site of a federation the same base weights
  // when no pretrained checkpoint is used (tests, the synthetic demo).
  absl::Status SaveBackbone(const std::string& path);

  // Trains on `train`, validating on `val` (may be empty) after every epoch,
  // and keeps the weights of the epoch with the highest validation macro
  // AUROC (or of the last epoch, see TrainOptions::keep_best_epoch). AdamW
  // decays weights but not biases, norms, LayerScale, position embeddings
  // and tokens.
  // CANCELLED when *cancel becomes true (the state is then the best so
  // far). Images are resized to the model's input size.
  absl::StatusOr<TrainResult> Train(const ImageDataset& train, const ImageDataset& val,
                                    const TrainOptions& options, const ProgressCallback& progress = {},
                                    const std::atomic<bool>* cancel = nullptr);

  // Probabilities (sigmoid of the logits), row-major [images x findings].
  absl::StatusOr<std::vector<double>> Predict(const ImageDataset& data, int batch_size = 32);

  struct Impl;

 private:
  explicit Classifier(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedtune::model
