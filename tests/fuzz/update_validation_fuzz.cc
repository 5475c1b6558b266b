// Fuzzes what the coordinator does with a site's upload before aggregating
// it: the bytes are read as a safetensors file (common/core/safetensors.h) and
// validated (common/fl/update_validation.h) against a fixed small global
// state under the limits a job uses. An accepted update must have the
// global's names and shapes, floating dtypes and finite values, and lie
// within the bounds; anything else must be refused with a status.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/core/safetensors.h"
#include "common/fl/update_validation.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using fedtune::Tensor;
using fedtune::TensorMap;

using fedtune::fuzz::Check;

Tensor Floats(std::vector<int64_t> shape, std::vector<float> values) { return *Tensor::FromFloats(shape, values); }

// A LoRA adapter on one projection (A non-zero, B still zero as at version 0)
// and a 2-finding head. tests/fuzz/make_seeds.py writes updates for it.
const TensorMap& Global() {
  static const TensorMap global = {
      {"encoder.layer.0.attention.query.lora_A", Floats({2, 4}, {0.5f, -0.25f, 0.125f, 1, -1, 0.75f, 0, 0.5f})},
      {"encoder.layer.0.attention.query.lora_B", Floats({4, 2}, std::vector<float>(8, 0.0f))},
      {"head.weight", Floats({2, 4}, {0.1f, 0.2f, -0.3f, 0.4f, -0.5f, 0.6f, 0.7f, -0.8f})},
      {"head.bias", Floats({2}, {0.01f, -0.02f})},
  };
  return global;
}

bool IsFloating(fedtune::DType d) {
  using fedtune::DType;
  return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16 || d == DType::kF64;
}

// ||update - global||_2 computed here, independently of the validator.
double DeltaNorm(const TensorMap& global, const TensorMap& update) {
  double sq = 0;
  for (const auto& [name, u] : update) {
    const std::vector<float> uv = *u.ToFloats();
    const std::vector<float> gv = *global.at(name).ToFloats();
    for (size_t i = 0; i < uv.size(); ++i)
      sq += (static_cast<double>(uv[i]) - gv[i]) * (static_cast<double>(uv[i]) - gv[i]);
  }
  return std::sqrt(sq);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedtune;
  auto file = SafetensorsFile::FromBytes(std::string(reinterpret_cast<const char*>(data), size));
  fuzz::Report("safetensors", file.status());
  if (!file.ok()) return 0;
  const TensorMap update = file->ReadAll();
  const TensorMap& global = Global();
  (void)fl::L2Norm(update);

  const fl::UpdateLimits limits[] = {
      {},                                                                        // shape and values only
      {.max_delta_l2 = 1.0},                                                     // job.max_update_l2
      {.max_delta_ratio = 4.0, .min_reference_rms = 0.01},                       // the job default
      {.max_delta_l2 = 0.5, .max_delta_ratio = 0.1, .min_reference_rms = 0.01},  // both, tight
  };
  for (const fl::UpdateLimits& l : limits) {
    const absl::Status valid = fl::ValidateUpdate(global, update, l);
    fuzz::Report("update", valid);
    if (!valid.ok()) continue;
    Check(update.size() == global.size(), "an accepted update has the global's tensors");
    for (const auto& [name, u] : update) {
      auto g = global.find(name);
      Check(g != global.end() && g->second.shape == u.shape && IsFloating(u.dtype),
            "an accepted tensor has the global's name and shape and a floating dtype");
      const std::vector<float> values = *u.ToFloats();
      for (float v : values) Check(std::isfinite(v), "an accepted value is finite");
    }
    const double norm = DeltaNorm(global, update);
    if (l.max_delta_l2 > 0) Check(norm <= l.max_delta_l2 * (1 + 1e-9), "an accepted update is within max_delta_l2");
    if (l.max_delta_ratio > 0) {
      const double floor = l.min_reference_rms * std::sqrt(20.0);  // 20 values in Global()
      Check(norm <= l.max_delta_ratio * std::max(fl::L2Norm(global), floor) * (1 + 1e-9),
            "an accepted update is within max_delta_ratio");
    }
  }
  return 0;
}
