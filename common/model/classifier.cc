#include "common/model/classifier.h"

#include <torch/nn/utils/clip_grad.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/core/status.h"
#include "common/metrics/evaluation.h"
#include "common/model/checkpoint.h"
#include "common/model/hf_export.h"
#include "common/model/torch_runtime.h"
#include "common/model/vit.h"

namespace fedtune::model {
namespace F = torch::nn::functional;

namespace {

constexpr double kPi = 3.14159265358979323846;

// Turns LibTorch exceptions into statuses at the library boundary.
template <typename Fn>
auto Guard(std::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& e) {
    std::string msg = e.what();
    if (auto nl = msg.find('\n'); nl != std::string::npos) msg.resize(nl);  // drop LibTorch's backtrace
    return absl::InternalError(absl::StrCat(Sv(what), ": ", msg));
  }
}

struct Batch {
  torch::Tensor images;  // [B, 1, S, S] float in [0, 1]
  torch::Tensor labels;  // [B, F] float (1, 0 or unknown)
};

// Assembles batches on a background thread (read, resize or augment, stack)
// so the device never waits for data. Deterministic: augmentation draws from
// its own generator seeded per batch.
class BatchProducer {
 public:
  // `pin`: page-locked batches, so that the copy to a CUDA device runs
  // asynchronously.
  BatchProducer(const ImageDataset& data, std::vector<size_t> order, int batch_size, int side,
                const AugmentOptions* augment, uint64_t seed, int prefetch, bool pin)
      : data_(data), order_(std::move(order)), batch_(batch_size), side_(side), augment_(augment),
        seed_(seed), capacity_(static_cast<size_t>(std::max(1, prefetch))), pin_(pin) {
    worker_ = std::thread([this] { Run(); });
  }
  ~BatchProducer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  // Fills *batch with the next batch; false after the last one. A failure to
  // read an image ends the sequence with its status in *status.
  bool Next(Batch* batch, absl::Status* status) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty() || done_; });
    if (queue_.empty()) return false;
    Item& front = queue_.front();
    *status = front.status;
    *batch = std::move(front.batch);
    queue_.pop_front();
    cv_.notify_all();
    return status->ok();
  }

 private:
  void Run() {
    for (size_t start = 0; start < order_.size(); start += static_cast<size_t>(batch_)) {
      const size_t end = std::min(order_.size(), start + static_cast<size_t>(batch_));
      Item item;
      item.status = Guard("assembling a batch", [&] { return Make(start, end, &item.batch); });
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return queue_.size() < capacity_ || stop_; });
      if (stop_) break;
      const bool failed = !item.status.ok();
      queue_.push_back(std::move(item));
      cv_.notify_all();
      if (failed) break;
    }
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }

  absl::Status Make(size_t start, size_t end, Batch* out) {
    const int64_t n = static_cast<int64_t>(end - start);
    const int h = data_.height(), w = data_.width();
    const size_t f = data_.num_findings();
    torch::Tensor images = torch::empty({n, 1, h, w});
    torch::Tensor labels = torch::empty({n, static_cast<int64_t>(f)});
    float* px = images.data_ptr<float>();
    float* lb = labels.data_ptr<float>();
    const size_t plane = static_cast<size_t>(h) * static_cast<size_t>(w);
    for (size_t i = start; i < end; ++i) {
      const size_t k = i - start;
      RETURN_IF_ERROR(data_.Get(order_[i], std::span<float>(px + k * plane, plane), std::span<float>(lb + k * f, f)));
    }
    // From the cache's size to the model's: antialiased when shrinking (a
    // plain bilinear shrink aliases fine lines), then the augmentation at the
    // model's size.
    images = ResizeImages(images, side_);
    if (augment_ != nullptr && augment_->enabled) images = Augment(images, start);
    if (pin_) {
      images = images.pin_memory();
      labels = labels.pin_memory();
    }
    *out = Batch{images, labels};
    return absl::OkStatus();
  }

  torch::Tensor Augment(const torch::Tensor& images, size_t batch_start) {
    const int64_t n = images.size(0);
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + batch_start);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    const AugmentOptions& a = *augment_;
    torch::Tensor theta = torch::empty({n, 2, 3});
    torch::Tensor gain = torch::empty({n, 1, 1, 1});
    torch::Tensor shift = torch::empty({n, 1, 1, 1});
    auto th = theta.accessor<float, 3>();
    for (int64_t i = 0; i < n; ++i) {
      const double area = a.min_area + (1 - a.min_area) * u(rng);
      const double log_r = std::log(a.max_aspect) * (2 * u(rng) - 1);
      const double sx = std::min(1.0, std::sqrt(area * std::exp(log_r)));
      const double sy = std::min(1.0, std::sqrt(area / std::exp(log_r)));
      const double tx = (1 - sx) * (2 * u(rng) - 1), ty = (1 - sy) * (2 * u(rng) - 1);
      const double rot = a.max_rotation_deg * kPi / 180 * (2 * u(rng) - 1);
      th[i][0][0] = static_cast<float>(sx * std::cos(rot));
      th[i][0][1] = static_cast<float>(-sy * std::sin(rot));
      th[i][0][2] = static_cast<float>(tx);
      th[i][1][0] = static_cast<float>(sx * std::sin(rot));
      th[i][1][1] = static_cast<float>(sy * std::cos(rot));
      th[i][1][2] = static_cast<float>(ty);
      gain[i] = 1 + a.contrast * (2 * u(rng) - 1);
      shift[i] = a.brightness * (2 * u(rng) - 1);
    }
    torch::Tensor grid = F::affine_grid(theta, {n, 1, side_, side_}, /*align_corners=*/false);
    torch::Tensor out = F::grid_sample(images, grid,
                                       F::GridSampleFuncOptions()
                                           .mode(torch::kBilinear)
                                           .padding_mode(torch::kBorder)
                                           .align_corners(false));
    torch::Tensor mean = out.mean({1, 2, 3}, /*keepdim=*/true);
    return ((out - mean) * gain + mean + shift).clamp(0, 1);
  }

  const ImageDataset& data_;
  std::vector<size_t> order_;
  int batch_;
  int side_;
  const AugmentOptions* augment_;
  uint64_t seed_;
  size_t capacity_;
  bool pin_;
  std::mutex mu_;
  std::condition_variable cv_;
  struct Item {
    absl::Status status;
    Batch batch;
  };
  std::deque<Item> queue_;
  bool stop_ = false;
  bool done_ = false;
  std::thread worker_;
};

// Class weights for BCE. kOwn: negatives / positives per finding over the
// labelled training images (1 where a class is missing), in [1e-3, 100].
absl::StatusOr<torch::Tensor> PosWeight(const ImageDataset& data, size_t count, const TrainOptions& options) {
  const size_t f = data.num_findings();
  if (options.class_weighting == ClassWeighting::kNone) return torch::ones({static_cast<int64_t>(f)});
  if (options.class_weighting == ClassWeighting::kGiven) {
    if (options.pos_weight.size() != f) {
      return absl::InvalidArgumentError(absl::StrCat("pos_weight has ", options.pos_weight.size(),
                                                     " values for ", f, " findings"));
    }
    for (double w : options.pos_weight) {
      if (!(w > 0) || !std::isfinite(w)) return absl::InvalidArgumentError("pos_weight must be positive and finite");
    }
    return torch::tensor(options.pos_weight, torch::kFloat64).to(torch::kFloat32);
  }
  std::vector<double> pos(f, 0), neg(f, 0);
  std::vector<float> labels(f);
  for (size_t i = 0; i < count; ++i) {
    RETURN_IF_ERROR(data.GetLabels(i, labels));
    for (size_t k = 0; k < f; ++k) {
      if (labels[k] == 1.0f) pos[k] += 1;
      if (labels[k] == 0.0f) neg[k] += 1;
    }
  }
  torch::Tensor w = torch::ones({static_cast<int64_t>(f)});
  for (size_t k = 0; k < f; ++k) {
    if (pos[k] > 0) w[static_cast<int64_t>(k)] = std::min(100.0, std::max(1e-3, neg[k] / pos[k]));
  }
  return w;
}

// Class-weighted BCE over the known labels only.
torch::Tensor MaskedLoss(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& pos_weight) {
  torch::Tensor known = (labels == 0).logical_or(labels == 1).to(torch::kFloat32);
  torch::Tensor target = labels.clamp(0, 1) * known;
  torch::Tensor per = F::binary_cross_entropy_with_logits(
      logits.to(torch::kFloat32), target,
      F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(pos_weight).reduction(torch::kNone));
  return (per * known).sum() / known.sum().clamp_min(1);
}

}  // namespace

struct Classifier::Impl {
  ModelSpec spec;
  ClassifierOptions options;
  ViTClassifier model{nullptr};
  BaseWeights base;  // the trained backbone tensors as loaded (global state is relative to them)
  torch::Device device{torch::kCPU};
  std::string backbone_sha256;

  // bfloat16 activations on CUDA (see PlaceOnDevice).
  bool bf16() const { return device.is_cuda() && options.bf16; }

  absl::StatusOr<std::vector<double>> Predict(const ImageDataset& data, int batch_size) {
    model->eval();
    torch::NoGradGuard no_grad;
    std::vector<size_t> order(data.size());
    std::iota(order.begin(), order.end(), 0);
    BatchProducer producer(data, std::move(order), batch_size, spec.vit.image_size, nullptr, 0, 2, device.is_cuda());
    std::vector<double> out;
    out.reserve(data.size() * spec.findings.size());
    Batch batch;
    absl::Status status;
    while (producer.Next(&batch, &status)) {
      torch::Tensor probs = torch::sigmoid(model->forward(batch.images.to(device)));
      probs = probs.to(torch::kCPU).to(torch::kFloat64).contiguous();
      const double* p = probs.data_ptr<double>();
      out.insert(out.end(), p, p + probs.numel());
    }
    RETURN_IF_ERROR(status);
    return out;
  }

  // Macro AUROC on `val` (NaN when it has no evaluable finding).
  // Each finding's validation AUROC (NaN where undefined); empty without a
  // validation set.
  absl::StatusOr<std::vector<double>> Validate(const ImageDataset& val) {
    if (val.size() == 0) return std::vector<double>{};
    ASSIGN_OR_RETURN(std::vector<double> probs, Predict(val, 64));
    std::vector<float> labels(val.size() * val.num_findings());
    for (size_t i = 0; i < val.size(); ++i) {
      RETURN_IF_ERROR(val.GetLabels(i, std::span<float>(labels.data() + i * val.num_findings(), val.num_findings())));
    }
    return metrics::FindingAurocs(val.num_findings(), probs, labels);
  }

  std::vector<torch::Tensor> Trainable() {
    std::vector<torch::Tensor> out;
    for (auto& p : model->parameters()) {
      if (p.requires_grad()) out.push_back(p);
    }
    return out;
  }
};

Classifier::Classifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Classifier::~Classifier() = default;

absl::StatusOr<std::unique_ptr<Classifier>> Classifier::Create(const ModelSpec& spec, const ClassifierOptions& options) {
  RETURN_IF_ERROR(Validate(spec));
  return Guard("creating the model", [&]() -> absl::StatusOr<std::unique_ptr<Classifier>> {
    auto impl = std::make_unique<Impl>();
    impl->spec = spec;
    impl->options = options;
    if (options.device == "cuda" || (options.device == "auto" && torch::cuda::is_available())) {
      if (!torch::cuda::is_available()) {
        return absl::FailedPreconditionError("device \"cuda\" requested but LibTorch sees no CUDA device");
      }
      impl->device = torch::Device(torch::kCUDA, 0);
    } else if (options.device != "cpu" && options.device != "auto") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown device \"", options.device, "\" (use cpu, cuda or auto)"));
    }
    if (!impl->device.is_cuda()) ConfigureTorchRuntime(options.threads);
    torch::manual_seed(options.seed);
    impl->model = ViTClassifier(spec);
    if (!options.backbone_path.empty()) {
      ASSIGN_OR_RETURN(BackboneSource src, LoadBackboneFile(impl->model->dinov2, options.backbone_path));
      impl->backbone_sha256 = src.sha256;
    }
    impl->model->dinov2->embeddings->ResampleTo(spec.vit.grid());
    impl->model->ApplyMethod();
    impl->base = CaptureBase(impl->model);
    PlaceOnDevice(impl->model, impl->device, impl->bf16());
    return std::unique_ptr<Classifier>(new Classifier(std::move(impl)));
  });
}

const ModelSpec& Classifier::spec() const { return impl_->spec; }
const std::string& Classifier::backbone_sha256() const { return impl_->backbone_sha256; }
std::string Classifier::device() const { return impl_->device.str(); }

absl::StatusOr<TensorMap> Classifier::TrainableState() {
  return Guard("exporting weights", [&] { return ExportTrainable(impl_->model); });
}

absl::Status Classifier::SetTrainableState(const TensorMap& state) {
  return Guard("importing weights", [&] { return ImportTrainable(impl_->model, state); });
}

absl::StatusOr<TensorMap> Classifier::GlobalState() {
  return Guard("exporting the global state", [&] { return ExportGlobalState(impl_->model, impl_->base, false); });
}

absl::Status Classifier::SetGlobalState(const TensorMap& state) {
  return Guard("importing the global state", [&] { return ImportGlobalState(impl_->model, impl_->base, state); });
}

absl::StatusOr<TensorMap> Classifier::UpdateState() {
  return Guard("exporting the update", [&] { return ExportGlobalState(impl_->model, impl_->base, true); });
}

absl::Status Classifier::SaveAdapter(const std::string& dir) {
  return Guard("saving the adapter", [&] { return model::SaveAdapter(impl_->model, dir); });
}

absl::Status Classifier::SaveHuggingFace(const std::string& dir) {
  return Guard("saving the model", [&] { return SaveHuggingFaceClassifier(impl_->model, dir); });
}

absl::Status Classifier::SaveBackbone(const std::string& path) {
  return Guard("saving the backbone", [&]() -> absl::Status {
    ASSIGN_OR_RETURN(TensorMap tensors, BackboneTensors(impl_->model->dinov2, BackboneSource{}));
    return WriteSafetensors(path, tensors, {{"format", "pt"}});
  });
}

absl::StatusOr<std::vector<double>> Classifier::Predict(const ImageDataset& data, int batch_size) {
  if (data.num_findings() != impl_->spec.findings.size()) {
    return absl::InvalidArgumentError(absl::StrCat("dataset has ", data.num_findings(), " findings, the model ",
                                                   impl_->spec.findings.size()));
  }
  return Guard("prediction", [&] { return impl_->Predict(data, std::max(1, batch_size)); });
}

absl::StatusOr<TrainResult> Classifier::Train(const ImageDataset& train, const ImageDataset& val,
                                              const TrainOptions& options, const ProgressCallback& progress,
                                              const std::atomic<bool>* cancel) {
  const size_t findings = impl_->spec.findings.size();
  if (train.num_findings() != findings || (val.size() > 0 && val.num_findings() != findings)) {
    return absl::InvalidArgumentError(absl::StrCat("datasets must have ", findings, " findings"));
  }
  if (options.epochs < 1 || options.batch_size < 1 || !(options.learning_rate > 0)) {
    return absl::InvalidArgumentError("epochs, batch_size and learning_rate must be positive");
  }
  size_t count = train.size();
  if (options.max_train_samples > 0) count = std::min(count, static_cast<size_t>(options.max_train_samples));
  if (count == 0) return absl::FailedPreconditionError("no training images");

  return Guard("training", [&]() -> absl::StatusOr<TrainResult> {
    Impl& m = *impl_;
    torch::manual_seed(options.seed);
    ASSIGN_OR_RETURN(torch::Tensor pos_weight, PosWeight(train, count, options));
    pos_weight = pos_weight.to(m.device);
    std::vector<torch::Tensor> params = m.Trainable();
    std::vector<torch::Tensor> start;  // FedProx anchor
    if (options.fedprox_mu > 0) {
      for (auto& p : params) start.push_back(p.detach().clone());
    }
    // Two parameter groups: weight decay pulls weights toward zero, which
    // for a pretrained bias, norm, LayerScale, position embedding or token
    // only erases what pretraining learned.
    std::vector<torch::Tensor> decay, no_decay;
    for (const auto& p : m.model->named_parameters()) {
      if (!p.value().requires_grad()) continue;
      (IsNoDecayParameter(p.key()) ? no_decay : decay).push_back(p.value());
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    const auto group_options = [&](double wd) {
      return std::make_unique<torch::optim::AdamWOptions>(
          torch::optim::AdamWOptions(options.learning_rate).weight_decay(wd));
    };
    if (!decay.empty()) groups.emplace_back(decay, group_options(options.weight_decay));
    if (!no_decay.empty()) groups.emplace_back(no_decay, group_options(0.0));
    torch::optim::AdamW opt(groups, torch::optim::AdamWOptions(options.learning_rate).weight_decay(options.weight_decay));

    const int64_t steps_per_epoch = static_cast<int64_t>((count + options.batch_size - 1) / options.batch_size);
    const int64_t total = steps_per_epoch * options.epochs;
    const int64_t warmup = static_cast<int64_t>(std::llround(options.warmup_fraction * static_cast<double>(total)));
    auto lr_at = [&](int64_t step) {
      if (step < warmup) return options.learning_rate * static_cast<double>(step + 1) / static_cast<double>(warmup + 1);
      const double t = total > warmup ? static_cast<double>(step - warmup) / static_cast<double>(total - warmup) : 1.0;
      return options.learning_rate * 0.5 * (1 + std::cos(kPi * t));
    };

    TrainResult result;
    result.examples = static_cast<int64_t>(count);
    result.best_val_auroc = -1;
    std::vector<torch::Tensor> best;
    int64_t step = 0;
    std::vector<size_t> order(count);
    std::iota(order.begin(), order.end(), 0);
    for (int epoch = 1; epoch <= options.epochs; ++epoch) {
      const auto t0 = std::chrono::steady_clock::now();
      std::mt19937_64 shuffle(options.seed * 1000003 + static_cast<uint64_t>(epoch));
      std::shuffle(order.begin(), order.end(), shuffle);
      m.model->train();
      BatchProducer producer(train, order, options.batch_size, m.spec.vit.image_size, &options.augment,
                             options.seed + static_cast<uint64_t>(epoch) * 7919, options.prefetch_batches,
                             m.device.is_cuda());
      double loss_sum = 0;
      int64_t seen = 0;
      Batch batch;
      absl::Status status;
      while (producer.Next(&batch, &status)) {
        if (cancel != nullptr && cancel->load()) {
          if (!best.empty()) {
            torch::NoGradGuard g;
            for (size_t i = 0; i < params.size(); ++i) params[i].copy_(best[i]);
          }
          return absl::CancelledError("training cancelled");
        }
        const double lr = lr_at(step);
        for (auto& group : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
        torch::Tensor x = batch.images.to(m.device, /*non_blocking=*/true);
        torch::Tensor y = batch.labels.to(m.device, /*non_blocking=*/true);
        torch::Tensor loss = MaskedLoss(m.model->forward(x), y, pos_weight);
        torch::Tensor total_loss = loss;
        if (options.fedprox_mu > 0) {
          torch::Tensor prox = torch::zeros({}, loss.options());
          for (size_t i = 0; i < params.size(); ++i) prox = prox + (params[i] - start[i]).pow(2).sum();
          total_loss = loss + 0.5 * options.fedprox_mu * prox;
        }
        opt.zero_grad();
        total_loss.backward();
        if (options.grad_clip_norm > 0) torch::nn::utils::clip_grad_norm_(params, options.grad_clip_norm);
        opt.step();
        ++step;
        loss_sum += loss.item<double>() * static_cast<double>(x.size(0));
        seen += x.size(0);
      }
      RETURN_IF_ERROR(status);
      const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ASSIGN_OR_RETURN(std::vector<double> per_finding, m.Validate(val));
      const double auroc = metrics::MeanOfDefined(per_finding);
      EpochReport report;
      report.val_auroc_per_finding = std::move(per_finding);
      report.epoch = epoch;
      report.epochs = options.epochs;
      report.steps = step;
      report.train_loss = seen > 0 ? loss_sum / static_cast<double>(seen) : 0;
      report.val_auroc = auroc;
      report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      report.images_per_second = train_seconds > 0 ? static_cast<double>(seen) / train_seconds : 0;
      result.epochs.push_back(report);
      // Keep the epoch with the best validation AUROC (the last one when
      // there is no validation figure, or when asked to keep the last).
      const bool better = !options.keep_best_epoch || std::isnan(auroc) || auroc > result.best_val_auroc;
      if (better) {
        result.best_epoch = epoch;
        result.best_val_auroc = auroc;
        best.clear();
        for (auto& p : params) best.push_back(p.detach().clone());
      }
      if (progress) progress(report);
    }
    if (!best.empty() && result.best_epoch != options.epochs) {
      torch::NoGradGuard g;
      for (size_t i = 0; i < params.size(); ++i) params[i].copy_(best[i]);
    }
    return result;
  });
}

}  // namespace fedtune::model
