// Dynamic batching for the inference service: concurrent requests wait up
// to a configured delay for others, then run through the model together (a
// ViT's cost per image falls with the batch, on CPU and more so on CUDA).
// One worker thread runs every batch, so the model is never used from two
// threads at once. Torch-free: the model is behind BatchModel.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::site {

// What a batch runs through: square single-channel images in [0, 1],
// row-major, in -> num_outputs() values per image. Images of another side
// than image_size() are resized by the model as its training resized them.
class BatchModel {
 public:
  virtual ~BatchModel() = default;
  virtual int image_size() const = 0;
  virtual int num_outputs() const = 0;
  // `images` holds n images of side x side one after another. Called from
  // the batcher's worker thread only.
  virtual absl::StatusOr<std::vector<float>> Run(std::span<const float> images, int n, int side) const = 0;
};

struct BatcherOptions {
  int max_batch_size = 8;  // images per batch; a larger request runs alone
  std::chrono::microseconds max_queue_delay{5000};
  // Called after each batch with its size in images and its seconds.
  std::function<void(int images, double seconds)> on_batch;
};

class Batcher {
 public:
  explicit Batcher(BatcherOptions options);
  ~Batcher();  // Stop()
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Runs `n` images of side x side (n * side^2 values, checked:
  // INVALID_ARGUMENT) through `model`, batched with other requests for the
  // same model and side; blocks until done. Returns n * num_outputs values.
  // UNAVAILABLE once stopped.
  absl::StatusOr<std::vector<float>> Run(std::shared_ptr<const BatchModel> model, std::vector<float> images, int n,
                                         int side);

  // Answers what waits with UNAVAILABLE and joins the worker.
  void Stop();

 private:
  struct Pending {
    std::shared_ptr<const BatchModel> model;
    std::vector<float> images;
    int n = 0;
    int side = 0;
    std::chrono::steady_clock::time_point enqueued;
    std::promise<absl::StatusOr<std::vector<float>>> result;
  };
  void Work();
  // Takes the requests of the next batch (the front one and those after it
  // for the same model and side, up to max_batch_size images), waiting up to the
  // front one's delay for more to arrive. Called with `mu_` held.
  std::vector<std::unique_ptr<Pending>> NextBatch(std::unique_lock<std::mutex>& lock);

  BatcherOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Pending>> queue_;
  bool stopped_ = false;
  std::thread worker_;
};

}  // namespace fedtune::site
