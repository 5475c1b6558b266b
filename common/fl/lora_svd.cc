#include "common/fl/lora_svd.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/core/status.h"

namespace fedtune::fl {
namespace {

std::string PairBase(std::string_view a_name) {
  return std::string(a_name.substr(0, a_name.size() - std::string_view(".lora_A.weight").size()));
}

absl::StatusOr<Matrix> ToMatrix(const Tensor& t) {
  if (t.shape.size() != 2) return absl::InvalidArgumentError("a LoRA factor must be a matrix");
  ASSIGN_OR_RETURN(std::vector<float> f, t.ToFloats());
  Matrix m(t.shape[0], t.shape[1]);
  for (size_t i = 0; i < f.size(); ++i) m.v[i] = f[i];
  return m;
}

}  // namespace

void RefactorLowRank(const std::vector<Matrix>& weighted_b, const std::vector<Matrix>& a, int64_t rank, Matrix* b_out,
                     Matrix* a_out, double* energy_kept) {
  const int64_t out = weighted_b.front().rows, in = a.front().cols;
  int64_t k = 0;
  for (const Matrix& m : a) k += m.rows;
  Matrix bcat(out, k), acat_t(in, k);  // [w_i B_i] and [A_i]^T
  int64_t col = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    for (int64_t c = 0; c < a[i].rows; ++c, ++col) {
      for (int64_t r = 0; r < out; ++r) bcat(r, col) = weighted_b[i](r, c);
      for (int64_t r = 0; r < in; ++r) acat_t(r, col) = a[i](c, r);
    }
  }
  // M = bcat acat = (qb rb) (qa ra)^T = qb (rb ra^T) qa^T.
  Matrix qb, rb, qa, ra;
  ThinQr(bcat, &qb, &rb);
  ThinQr(acat_t, &qa, &ra);
  const Matrix core = Multiply(rb, Transpose(ra));  // pb x pa
  Matrix u, v;
  std::vector<double> s;
  Svd(core, &u, &s, &v);
  double all = 0, kept = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    all += s[i] * s[i];
    if (static_cast<int64_t>(i) < rank) kept += s[i] * s[i];
  }
  *energy_kept = all > 0 ? kept / all : 1.0;
  // B = qb u_r s_r (out x r), A = (qa v_r)^T (r x in). When M has fewer than
  // r non-zero singular values the extra columns of B are zero and the rows
  // of A still orthonormal directions (v is orthonormal), as a fresh LoRA
  // pair has B = 0 and A != 0.
  const Matrix qbu = Multiply(qb, u);  // out x p
  const Matrix qav = Multiply(qa, v);  // in x p
  const int64_t p = static_cast<int64_t>(s.size());
  *b_out = Matrix(out, rank);
  *a_out = Matrix(rank, in);
  for (int64_t c = 0; c < std::min(rank, p); ++c) {
    for (int64_t r = 0; r < out; ++r) (*b_out)(r, c) = qbu(r, c) * s[static_cast<size_t>(c)];
    for (int64_t r = 0; r < in; ++r) (*a_out)(c, r) = qav(r, c);
  }
  // (p < r only when every site's adapter together spans fewer than r
  // dimensions of a tiny layer; those rows stay zero.)
}

absl::Status LoraSvd::Begin(const TensorMap& global, const TensorMap&) {
  global_ = global;
  pairs_.clear();
  for (const auto& [name, t] : global) {
    if (!IsLoraA(name)) continue;
    const std::string base = PairBase(name);
    auto b = global.find(base + ".lora_B.weight");
    if (b == global.end()) return absl::InvalidArgumentError(absl::StrCat("lora-svd: ", name, " has no lora_B"));
    if (t.shape.size() != 2 || b->second.shape.size() != 2 || b->second.shape[1] != t.shape[0]) {
      return absl::InvalidArgumentError(absl::StrCat("lora-svd: ", base, "'s A and B do not form a LoRA pair"));
    }
    Pair p;
    p.a_name = name;
    p.b_name = b->first;
    p.rank = t.shape[0];
    p.in = t.shape[1];
    p.out = b->second.shape[0];
    pairs_.push_back(std::move(p));
  }
  if (pairs_.empty()) return absl::InvalidArgumentError("lora-svd: the global model has no LoRA adapters (method is not lora)");
  mean_.Reset(global, [](const std::string& n) { return !IsLoraA(n) && !IsLoraB(n); });
  total_weight_ = 0;
  begun_ = true;
  return absl::OkStatus();
}

absl::Status LoraSvd::Add(const std::string& site_id, const TensorMap& update, int64_t num_examples) {
  if (!begun_) return absl::FailedPreconditionError("lora-svd: Add before Begin");
  if (update.size() != global_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("lora-svd: site ", site_id, "'s update does not match the global"));
  }
  const double w = static_cast<double>(num_examples);
  std::vector<std::pair<Matrix, Matrix>> staged;  // (w B, A) per pair
  for (const Pair& p : pairs_) {
    auto a = update.find(p.a_name);
    auto b = update.find(p.b_name);
    if (a == update.end() || b == update.end()) {
      return absl::InvalidArgumentError(absl::StrCat("lora-svd: site ", site_id, "'s update lacks ", p.a_name));
    }
    ASSIGN_OR_RETURN(Matrix am, ToMatrix(a->second));
    ASSIGN_OR_RETURN(Matrix bm, ToMatrix(b->second));
    if (am.rows != p.rank || am.cols != p.in || bm.rows != p.out || bm.cols != p.rank) {
      return absl::InvalidArgumentError(absl::StrCat("lora-svd: site ", site_id, "'s ", p.a_name, " has another shape"));
    }
    for (double& x : bm.v) x *= w;
    staged.emplace_back(std::move(bm), std::move(am));
  }
  RETURN_IF_ERROR(mean_.Add(site_id, update, w));
  for (size_t i = 0; i < pairs_.size(); ++i) {
    pairs_[i].weighted_b.push_back(std::move(staged[i].first));
    pairs_[i].a.push_back(std::move(staged[i].second));
  }
  total_weight_ += w;
  return absl::OkStatus();
}

absl::StatusOr<Aggregate> LoraSvd::Finish() {
  if (!begun_ || total_weight_ <= 0) return absl::FailedPreconditionError("lora-svd: no update to aggregate");
  Aggregate out;
  for (const auto& [name, g] : global_) {
    if (!IsLoraA(name) && !IsLoraB(name)) out.global[name] = EncodeLike(mean_.Mean(name), g);
  }
  min_energy_ = 1;
  double kept_sum = 0, count = 0;
  for (Pair& p : pairs_) {
    for (Matrix& b : p.weighted_b) {
      for (double& x : b.v) x /= total_weight_;
    }
    Matrix b, a;
    double energy = 1;
    RefactorLowRank(p.weighted_b, p.a, p.rank, &b, &a, &energy);
    out.global[p.b_name] = EncodeLike(b.v, global_.at(p.b_name));
    out.global[p.a_name] = EncodeLike(a.v, global_.at(p.a_name));
    min_energy_ = std::min(min_energy_, energy);
    kept_sum += energy;
    count += 1;
    p.weighted_b.clear();
    p.a.clear();
  }
  total_energy_ = count > 0 ? kept_sum / count : 1;
  out.summary = absl::StrFormat("rank-%d SVD of the averaged adapters kept %.2f %% of their energy (least: %.2f %%)",
                                pairs_.front().rank, 100 * total_energy_, 100 * min_energy_);
  begun_ = false;
  return out;
}

}  // namespace fedtune::fl
