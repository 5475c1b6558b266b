// Patient-level splits and nested training subsets. Pure functions of the
// patient pseudonym (or image id) and a seed: the same patient lands in the
// same split on every run and at every site size, so adding data never moves
// a patient, and larger training subsets contain the smaller ones.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::dataset {

enum class Split { kTrain, kVal, kTest };
std::string_view SplitName(Split s);  // "train", "val", "test"

struct SplitRatios {
  double train = 0.7;
  double val = 0.1;
  double test = 0.2;
};

// INVALID_ARGUMENT unless all ratios are >= 0 and they sum to 1 (within 1e-9).
absl::Status Validate(const SplitRatios& r);

// A number in [0, 1) from SHA-256(seed, salt, id): uniform, stable, and
// independent for different salts.
double UnitHash(std::string_view id, uint64_t seed, std::string_view salt);

// The split of a patient: train when UnitHash < train, val when < train + val,
// test otherwise.
Split AssignSplit(std::string_view patient_pseudonym, uint64_t seed, const SplitRatios& ratios);

struct Candidate {
  std::string image_id;  // pseudonymized
  bool positive = false;  // for the balancing finding (ignored without balance)
};

// The training images to use under a cap: images are ranked by
// UnitHash(image_id, seed, "subset") and the first `cap` taken, so the subset
// for cap N is contained in the one for any cap > N. With `balance` > 0,
// positives and negatives are drawn in the ratio 1 : balance (as far as the
// data allows), each in hash order, so balanced subsets are nested too.
// cap <= 0 keeps every image (in rank order).
std::vector<std::string> NestedSubset(const std::vector<Candidate>& candidates, int64_t cap, uint64_t seed,
                                      double balance = 0);

}  // namespace fedtune::dataset
