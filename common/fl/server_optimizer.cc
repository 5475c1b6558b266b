#include "common/fl/server_optimizer.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/core/status.h"

namespace fedtune::fl {
namespace {

std::vector<double> AsDoubles(const std::vector<float>& f) { return std::vector<double>(f.begin(), f.end()); }

}  // namespace

ServerOptimizer::ServerOptimizer(Kind kind, const StrategyOptions& options) : kind_(kind), options_(options) {}

std::string_view ServerOptimizer::name() const {
  switch (kind_) {
    case Kind::kAvgM: return "fedavgm";
    case Kind::kAdagrad: return "fedadagrad";
    case Kind::kYogi: return "fedyogi";
    case Kind::kAdam: return "fedadam";
  }
  return "fedavgm";
}

absl::Status ServerOptimizer::Begin(const TensorMap& global, const TensorMap& server_state) {
  global_ = global;
  m_.clear();
  v_.clear();
  const bool adaptive = kind_ != Kind::kAvgM;
  for (const auto& [tensor_name, t] : global) {
    const std::string& name = tensor_name;  // clang 14 cannot capture a structured binding
    const size_t n = static_cast<size_t>(t.numel());
    auto load = [&](const std::string& key, double initial, std::map<std::string, std::vector<double>>* into) -> absl::Status {
      auto it = server_state.find(key);
      if (it == server_state.end()) {
        (*into)[name].assign(n, initial);
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(std::vector<float> f, it->second.ToFloats());
      if (f.size() != n) {
        return absl::DataLossError(absl::StrCat(Sv(this->name()), ": stored server state ", key, " has another size"));
      }
      (*into)[name] = AsDoubles(f);
      return absl::OkStatus();
    };
    RETURN_IF_ERROR(load("m:" + name, 0.0, &m_));
    if (adaptive) RETURN_IF_ERROR(load("v:" + name, options_.tau * options_.tau, &v_));
  }
  mean_.Reset(global, [](const std::string&) { return true; });
  begun_ = true;
  return absl::OkStatus();
}

absl::Status ServerOptimizer::Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) {
  if (!begun_) return absl::FailedPreconditionError(absl::StrCat(Sv(name()), ": Add before Begin"));
  if (update.size() != global_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(Sv(name()), ": site ", site_id, "'s update does not match the global"));
  }
  return mean_.Add(site_id, update, static_cast<double>(num_examples));
}

absl::StatusOr<Aggregate> ServerOptimizer::Finish() {
  if (!begun_ || mean_.total_weight() <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(Sv(name()), ": no update to aggregate"));
  }
  const double lr = options_.server_learning_rate, b1 = options_.beta1, b2 = options_.beta2, tau = options_.tau;
  Aggregate out;
  double step_sq = 0, delta_sq = 0;
  for (const auto& [name, g] : global_) {
    ASSIGN_OR_RETURN(std::vector<float> gf, g.ToFloats());
    const std::vector<double> mean = mean_.Mean(name);
    std::vector<double>& m = m_[name];
    std::vector<double> next(gf.size());
    for (size_t i = 0; i < gf.size(); ++i) {
      const double x = gf[i];
      const double d = mean[i] - x;  // the pseudo-gradient (a descent direction)
      delta_sq += d * d;
      double step = 0;
      if (kind_ == Kind::kAvgM) {
        m[i] = options_.server_momentum * m[i] + d;
        step = lr * m[i];
      } else {
        double& v = v_[name][i];
        m[i] = b1 * m[i] + (1 - b1) * d;
        const double d2 = d * d;
        switch (kind_) {
          case Kind::kAdagrad: v = v + d2; break;
          case Kind::kYogi: v = v - (1 - b2) * d2 * (v - d2 > 0 ? 1.0 : (v - d2 < 0 ? -1.0 : 0.0)); break;
          case Kind::kAdam: v = b2 * v + (1 - b2) * d2; break;
          case Kind::kAvgM: break;
        }
        step = lr * m[i] / (std::sqrt(std::max(v, 0.0)) + tau);
      }
      step_sq += step * step;
      next[i] = x + step;
    }
    out.global[name] = EncodeLike(next, g);
    out.server_state["m:" + name] = EncodeLike(m, Tensor{DType::kF32, g.shape, {}});
    if (kind_ != Kind::kAvgM) out.server_state["v:" + name] = EncodeLike(v_[name], Tensor{DType::kF32, g.shape, {}});
  }
  out.summary = absl::StrFormat("%s step %.4g (L2) along a mean update of %.4g", name(), std::sqrt(step_sq),
                                std::sqrt(delta_sq));
  begun_ = false;
  return out;
}

}  // namespace fedtune::fl
