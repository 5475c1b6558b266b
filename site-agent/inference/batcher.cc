#include "site-agent/inference/batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fedtune::site {

Batcher::Batcher(BatcherOptions options) : options_(std::move(options)) {
  options_.max_batch_size = std::max(1, options_.max_batch_size);
  worker_ = std::thread([this] { Work(); });
}

Batcher::~Batcher() { Stop(); }

void Batcher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_ && !worker_.joinable()) return;
    stopped_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& p : queue_) p->result.set_value(absl::UnavailableError("the inference service is stopping"));
  queue_.clear();
}

absl::StatusOr<std::vector<float>> Batcher::Run(std::shared_ptr<const BatchModel> model, std::vector<float> images,
                                                int n, int side) {
  if (model == nullptr) return absl::UnavailableError("no model is loaded");
  if (n < 1 || side < 1 || static_cast<int64_t>(images.size()) != int64_t{n} * side * side) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected ", n, " image(s) of ", side, "x", side, " values, got ", images.size(), " values"));
  }
  auto pending = std::make_unique<Pending>();
  pending->model = std::move(model);
  pending->images = std::move(images);
  pending->n = n;
  pending->side = side;
  pending->enqueued = std::chrono::steady_clock::now();
  std::future<absl::StatusOr<std::vector<float>>> result = pending->result.get_future();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return absl::UnavailableError("the inference service is stopping");
    queue_.push_back(std::move(pending));
  }
  cv_.notify_all();
  return result.get();
}

std::vector<std::unique_ptr<Batcher::Pending>> Batcher::NextBatch(std::unique_lock<std::mutex>& lock) {
  const auto deadline = queue_.front()->enqueued + options_.max_queue_delay;
  auto joins = [](const Pending& a, const Pending& b) { return a.model == b.model && a.side == b.side; };
  // Images of the front request and those behind it for the same model and
  // side that fit the batch.
  auto fitting = [&] {
    int images = 0;
    for (const auto& p : queue_) {
      if (!joins(*p, *queue_.front())) break;
      if (images > 0 && images + p->n > options_.max_batch_size) break;
      images += p->n;
    }
    return images;
  };
  while (!stopped_ && fitting() < options_.max_batch_size &&
         joins(*queue_.back(), *queue_.front()) &&
         cv_.wait_until(lock, deadline) != std::cv_status::timeout) {
  }
  std::vector<std::unique_ptr<Pending>> batch;
  int images = 0;
  while (!queue_.empty() && (batch.empty() || joins(*queue_.front(), *batch[0]))) {
    if (!batch.empty() && images + queue_.front()->n > options_.max_batch_size) break;
    images += queue_.front()->n;
    batch.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return batch;
}

void Batcher::Work() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stopped_ || !queue_.empty(); });
    if (stopped_) return;
    std::vector<std::unique_ptr<Pending>> batch = NextBatch(lock);
    if (batch.empty()) continue;
    lock.unlock();
    const BatchModel& model = *batch[0]->model;
    const int side = batch[0]->side;
    int n = 0;
    for (const auto& p : batch) n += p->n;
    std::vector<float> images;
    if (batch.size() == 1) {
      images = std::move(batch[0]->images);
    } else {
      images.reserve(static_cast<size_t>(n) * side * side);
      for (const auto& p : batch) images.insert(images.end(), p->images.begin(), p->images.end());
    }
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::vector<float>> out = absl::InternalError("the model run did not finish");
    try {
      out = model.Run(images, n, side);
    } catch (const std::exception& e) {  // bad_alloc and the like: this batch fails, the service goes on
      out = absl::ResourceExhaustedError(absl::StrCat("the model run failed: ", e.what()));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const size_t per_image = static_cast<size_t>(model.num_outputs());
    if (out.ok() && out->size() != static_cast<size_t>(n) * per_image) {
      out = absl::InternalError(absl::StrCat("the model returned ", out->size(), " values for ", n, " images"));
    }
    size_t at = 0;
    for (auto& p : batch) {
      if (!out.ok()) {
        p->result.set_value(out.status());
        continue;
      }
      const size_t len = static_cast<size_t>(p->n) * per_image;
      p->result.set_value(std::vector<float>(out->begin() + at, out->begin() + at + len));
      at += len;
    }
    if (options_.on_batch) options_.on_batch(n, seconds);
    lock.lock();
  }
}

}  // namespace fedtune::site
