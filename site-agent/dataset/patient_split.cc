#include "site-agent/dataset/patient_split.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/core/hashing.h"
#include "common/core/status.h"

namespace fedtune::dataset {

std::string_view SplitName(Split s) {
  switch (s) {
    case Split::kTrain: return "train";
    case Split::kVal: return "val";
    case Split::kTest: return "test";
  }
  return "train";
}

absl::Status Validate(const SplitRatios& r) {
  if (r.train < 0 || r.val < 0 || r.test < 0 || std::abs(r.train + r.val + r.test - 1.0) > 1e-9) {
    return absl::InvalidArgumentError(absl::StrCat("split ratios must be >= 0 and sum to 1, got train ", r.train,
                                                   ", val ", r.val, ", test ", r.test));
  }
  return absl::OkStatus();
}

double UnitHash(std::string_view id, uint64_t seed, std::string_view salt) {
  const uint64_t v = DigestPrefix64(Sha256(absl::StrCat(seed, "\x1f", Sv(salt), "\x1f", Sv(id))));
  return static_cast<double>(v >> 11) * 0x1.0p-53;  // 53 random bits -> [0, 1)
}

Split AssignSplit(std::string_view patient_pseudonym, uint64_t seed, const SplitRatios& ratios) {
  const double u = UnitHash(patient_pseudonym, seed, "split");
  if (u < ratios.train) return Split::kTrain;
  if (u < ratios.train + ratios.val) return Split::kVal;
  return Split::kTest;
}

std::vector<std::string> NestedSubset(const std::vector<Candidate>& candidates, int64_t cap, uint64_t seed,
                                      double balance) {
  std::vector<std::pair<double, const Candidate*>> ranked;
  ranked.reserve(candidates.size());
  for (const Candidate& c : candidates) ranked.emplace_back(UnitHash(c.image_id, seed, "subset"), &c);
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : a.second->image_id < b.second->image_id;
  });
  const size_t limit = cap <= 0 ? ranked.size() : std::min(ranked.size(), static_cast<size_t>(cap));
  std::vector<std::string> out;
  out.reserve(limit);
  if (balance <= 0) {
    for (size_t i = 0; i < limit; ++i) out.push_back(ranked[i].second->image_id);
    return out;
  }
  // Two queues in hash order; after each step take from whichever is further
  // below its share (positives : negatives = 1 : balance). The choice at step k
  // depends only on the first k picks, so growing the cap only appends.
  std::vector<const Candidate*> pos, neg;
  for (const auto& [h, c] : ranked) (c->positive ? pos : neg).push_back(c);
  size_t p = 0, n = 0;
  while (out.size() < limit) {
    const bool pos_left = p < pos.size(), neg_left = n < neg.size();
    bool take_pos;
    if (pos_left && neg_left) {
      take_pos = static_cast<double>(p) * balance <= static_cast<double>(n);
    } else {
      take_pos = pos_left;
    }
    out.push_back(take_pos ? pos[p++]->image_id : neg[n++]->image_id);
  }
  return out;
}

}  // namespace fedtune::dataset
