#include "common/fl/strategy.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/core/status.h"
#include "common/fl/lora_svd.h"
#include "common/fl/robust.h"
#include "common/fl/server_optimizer.h"

namespace fedtune::fl {
namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool IsFloating(DType d) { return d == DType::kF64 || d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; }

}  // namespace

const std::vector<std::string>& StrategyNames() {
  static const std::vector<std::string> kNames = {"fedavg",  "fedprox", "ffa-lora",   "lora-svd",     "fedavgm",
                                                  "fedadam", "fedyogi", "fedadagrad", "median", "trimmed-mean"};
  return kNames;
}

double DefaultServerLearningRate(std::string_view strategy) {
  // FedAvgM with lr 1 and momentum 0 is FedAvg; with momentum 0.9 its step
  // settles at lr / (1 - 0.9) times the mean update, so lr 0.1 is FedAvg's
  // step once momentum has built up (lr 1 overshot on the demo's
  // federation). The adaptive optimisers move every coordinate by about lr
  // per round (m / sqrt(v) is about +-1), so their lr is on the scale of a
  // round's typical change of one weight; on the demo's federation (LoRA, lr
  // 0.003 at the sites) a sweep on one seed gave 1e-2 for FedAdam (3e-2
  // diverged) and 3e-2 for FedAdagrad (tests/bench/RESULTS.md).
  if (strategy == "fedavgm") return 0.1;
  if (strategy == "fedadagrad") return 3e-2;
  return 1e-2;  // fedadam, fedyogi
}

bool IsLinear(std::string_view s) {
  return s == "fedavg" || s == "fedprox" || s == "ffa-lora" || s == "fedavgm" || s == "fedadam" || s == "fedyogi" ||
         s == "fedadagrad";
}

bool RequiresLora(std::string_view s) { return s == "ffa-lora" || s == "lora-svd"; }

absl::Status Validate(const StrategyOptions& o) {
  const auto& names = StrategyNames();
  if (std::find(names.begin(), names.end(), o.name) == names.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown strategy \"", o.name, "\" (known: ", absl::StrJoin(names, ", "), ")"));
  }
  auto bad = [](std::string_view field, std::string_view range, double v) {
    return absl::InvalidArgumentError(absl::StrCat("strategy.", Sv(field), " must be ", Sv(range), ", got ", v));
  };
  if (!(o.server_learning_rate > 0) || o.server_learning_rate > 100) {
    return bad("server_learning_rate", "in (0, 100]", o.server_learning_rate);
  }
  if (!(o.server_momentum >= 0 && o.server_momentum < 1)) return bad("server_momentum", "in [0, 1)", o.server_momentum);
  if (!(o.beta1 >= 0 && o.beta1 < 1)) return bad("beta1", "in [0, 1)", o.beta1);
  if (!(o.beta2 >= 0 && o.beta2 < 1)) return bad("beta2", "in [0, 1)", o.beta2);
  if (!(o.tau > 0) || o.tau > 1) return bad("tau", "in (0, 1]", o.tau);
  if (!(o.trim_fraction >= 0 && o.trim_fraction < 0.5)) return bad("trim_fraction", "in [0, 0.5)", o.trim_fraction);
  return absl::OkStatus();
}

bool IsLoraA(std::string_view n) { return EndsWith(n, ".lora_A.weight"); }
bool IsLoraB(std::string_view n) { return EndsWith(n, ".lora_B.weight"); }

bool Strategy::ShipsTensor(std::string_view) const { return true; }

Tensor EncodeLike(const std::vector<double>& values, const Tensor& like) {
  Tensor t;
  t.dtype = IsFloating(like.dtype) ? like.dtype : DType::kF32;
  t.shape = like.shape;
  t.data.resize(values.size() * DTypeSize(t.dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    std::byte* p = t.data.data() + i * DTypeSize(t.dtype);
    const float f = static_cast<float>(values[i]);
    switch (t.dtype) {
      case DType::kF64: std::memcpy(p, &values[i], 8); break;
      case DType::kF16: {
        const uint16_t h = FloatToHalf(f);
        std::memcpy(p, &h, 2);
        break;
      }
      case DType::kBF16: {
        const uint16_t b = FloatToBFloat16(f);
        std::memcpy(p, &b, 2);
        break;
      }
      default: std::memcpy(p, &f, 4); break;
    }
  }
  return t;
}

absl::Status WeightedMean::Add(std::string_view site_id, const TensorMap& update, double weight) {
  if (!(weight > 0)) return absl::InvalidArgumentError(absl::StrCat("site ", Sv(site_id), " has weight ", weight));
  // Convert everything first so a bad update leaves the sums untouched.
  std::vector<std::pair<std::vector<double>*, std::vector<float>>> staged;
  for (auto& [name, sum] : sums_) {
    auto it = update.find(name);
    if (it == update.end()) {
      return absl::InvalidArgumentError(absl::StrCat("site ", Sv(site_id), "'s update lacks ", name));
    }
    ASSIGN_OR_RETURN(std::vector<float> v, it->second.ToFloats());
    if (v.size() != sum.size()) {
      return absl::InvalidArgumentError(absl::StrCat("site ", Sv(site_id), "'s ", name, " has another size"));
    }
    staged.emplace_back(&sum, std::move(v));
  }
  for (auto& [sum, v] : staged) {
    for (size_t i = 0; i < v.size(); ++i) (*sum)[i] += weight * v[i];
  }
  total_ += weight;
  return absl::OkStatus();
}

std::vector<double> WeightedMean::Mean(const std::string& name) const {
  std::vector<double> out = sums_.at(name);
  for (double& v : out) v /= total_;
  return out;
}

absl::Status FedAvg::Begin(const TensorMap& global, const TensorMap&) {
  global_ = global;
  mean_.Reset(global, [](const std::string&) { return true; });
  begun_ = true;
  return absl::OkStatus();
}

absl::Status FedAvg::Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) {
  if (!begun_) return absl::FailedPreconditionError("fedavg: Add before Begin");
  if (update.size() != global_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("fedavg: site ", site_id, "'s update does not match the global"));
  }
  return mean_.Add(site_id, update, static_cast<double>(num_examples));
}

absl::StatusOr<Aggregate> FedAvg::Finish() {
  if (!begun_ || mean_.total_weight() <= 0) return absl::FailedPreconditionError("fedavg: no update to aggregate");
  Aggregate out;
  for (const auto& [name, g] : global_) out.global[name] = EncodeLike(mean_.Mean(name), g);
  begun_ = false;
  return out;
}

absl::Status FfaLora::Begin(const TensorMap& global, const TensorMap&) {
  bool any_a = false;
  for (const auto& [name, t] : global) any_a = any_a || IsLoraA(name);
  if (!any_a) return absl::InvalidArgumentError("ffa-lora: the global model has no LoRA A tensors (method is not lora)");
  global_ = global;
  mean_.Reset(global, [this](const std::string& n) { return ShipsTensor(n); });
  begun_ = true;
  return absl::OkStatus();
}

absl::Status FfaLora::Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) {
  if (!begun_) return absl::FailedPreconditionError("ffa-lora: Add before Begin");
  for (const auto& [name, t] : update) {
    if (IsLoraA(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("ffa-lora: site ", site_id, " sent ", name, ", which every site keeps frozen"));
    }
  }
  if (update.size() != mean_.sums().size()) {
    return absl::InvalidArgumentError(absl::StrCat("ffa-lora: site ", site_id, "'s update does not match the global"));
  }
  return mean_.Add(site_id, update, static_cast<double>(num_examples));
}

absl::StatusOr<Aggregate> FfaLora::Finish() {
  if (!begun_ || mean_.total_weight() <= 0) return absl::FailedPreconditionError("ffa-lora: no update to aggregate");
  Aggregate out;
  for (const auto& [name, g] : global_) out.global[name] = IsLoraA(name) ? g : EncodeLike(mean_.Mean(name), g);
  begun_ = false;
  return out;
}

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(const StrategyOptions& o) {
  RETURN_IF_ERROR(Validate(o));
  const std::string& n = o.name;
  // FedProx trains differently at the sites (a proximal term) and aggregates
  // as FedAvg does.
  if (n == "fedavg" || n == "fedprox") return std::unique_ptr<Strategy>(std::make_unique<FedAvg>());
  if (n == "ffa-lora") return std::unique_ptr<Strategy>(std::make_unique<FfaLora>());
  if (n == "lora-svd") return std::unique_ptr<Strategy>(std::make_unique<LoraSvd>());
  if (n == "median") return std::unique_ptr<Strategy>(std::make_unique<CoordinateMedian>());
  if (n == "trimmed-mean") return std::unique_ptr<Strategy>(std::make_unique<TrimmedMean>(o.trim_fraction));
  ServerOptimizer::Kind kind = ServerOptimizer::Kind::kAvgM;
  if (n == "fedadam") kind = ServerOptimizer::Kind::kAdam;
  if (n == "fedyogi") kind = ServerOptimizer::Kind::kYogi;
  if (n == "fedadagrad") kind = ServerOptimizer::Kind::kAdagrad;
  return std::unique_ptr<Strategy>(std::make_unique<ServerOptimizer>(kind, o));
}

absl::StatusOr<std::unique_ptr<Strategy>> MakeStrategy(std::string_view name) {
  StrategyOptions o;
  o.name = std::string(name);
  o.server_learning_rate = DefaultServerLearningRate(name);
  return MakeStrategy(o);
}

}  // namespace fedtune::fl
