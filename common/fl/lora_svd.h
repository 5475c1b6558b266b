// lora-svd: exact aggregation of LoRA adapters followed by the best rank-r
// re-factorisation (as NVFlare's federated LoRA example does).
//
// For every adapted module the example-weighted mean of the sites' low-rank
// products, M = sum_i w_i B_i A_i / sum_i w_i, is what averaging the adapted
// weights means (the scaling alpha / r is the same at every site). M has
// rank <= sites x r; fedtune never forms it: with Bcat = [w_1 B_1 ... w_n B_n]
// / sum w and Acat = [A_1; ...; A_n], M = Bcat Acat, and thin QR of both
// factors reduces the SVD of M to one of a (n r) x (n r) core. M is then cut
// to its r largest singular values (Eckart-Young: the best rank-r
// approximation in Frobenius norm) and split as B = U_r S_r, A = V_r^T (A
// with orthonormal rows, so no direction of the adapter goes dead). The
// share of M's energy (sum of squared singular values) kept is reported per
// round. The head and every other tensor are averaged as FedAvg does.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/fl/linalg.h"
#include "common/fl/strategy.h"

namespace fedtune::fl {

class LoraSvd final : public Strategy {
 public:
  std::string_view name() const override { return "lora-svd"; }
  absl::Status Begin(const TensorMap& global, const TensorMap& server_state) override;
  absl::Status Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) override;
  absl::StatusOr<Aggregate> Finish() override;

  // The share of the averaged adapters' energy the last Finish() kept
  // (min over modules and overall), for tests and the round's summary.
  double min_energy_kept() const { return min_energy_; }
  double total_energy_kept() const { return total_energy_; }

 private:
  struct Pair {
    std::string a_name, b_name;
    int64_t rank = 0, in = 0, out = 0;
    std::vector<Matrix> weighted_b;  // w_i B_i, one per site (out x r)
    std::vector<Matrix> a;           // A_i (r x in)
  };
  TensorMap global_;
  WeightedMean mean_;  // everything that is not a LoRA factor
  std::vector<Pair> pairs_;
  double total_weight_ = 0;
  bool begun_ = false;
  double min_energy_ = 1, total_energy_ = 1;
};

// The rank-r factors of (sum_i weighted_b[i] a[i]) as described above:
// B (out x r) and A (r x in); *energy_kept in [0, 1] (1 when M is zero).
// `weighted_b` already carries each site's share of the weights.
void RefactorLowRank(const std::vector<Matrix>& weighted_b, const std::vector<Matrix>& a, int64_t rank, Matrix* b_out,
                     Matrix* a_out, double* energy_kept);

}  // namespace fedtune::fl
