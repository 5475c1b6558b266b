// One securely aggregated training round at the coordinator: the stages of
// common/secagg around its ServerSession, who is expected at each, and when
// each closes. Held in memory only (the sites' secrets are too): a
// coordinator restart during the round loses it, and the engine retries
// the round. Nothing in it is a site's update in the clear: it holds public
// keys, shares sealed for other sites, and the modular sum of masked
// vectors.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/secagg/protocol.h"
#include "fedtune/v1/federation.pb.h"

namespace fedtune::coordinator {

class SecureRound {
 public:
  // `weights`: each participant's share of the round's mean (summing to 1).
  // Advertising waits for every live participant until `advertise_until_ms`
  // (their training takes what it takes); each later stage waits at most
  // `stage_ms` after the previous closed.
  // `ca_pem`, when given, checks each advertisement's signature on arrival.
  SecureRound(secagg::Params params, std::map<std::string, double> weights, int64_t advertise_until_ms,
              int64_t stage_ms, std::string ca_pem = "");

  const secagg::Params& params() const { return params_; }
  double weight(const std::string& site) const;

  // A site's message for one stage. PERMISSION_DENIED for keys in another
  // site's name; FAILED_PRECONDITION for a site that a closed stage left out.
  absl::StatusOr<v1::SecAggResponse> Handle(const std::string& site, const v1::SecAggRequest& request);
  // Whether a site's masked vector of `length` values would be taken now
  // (stage 3, a site that shared, not yet sent), and taking it.
  absl::Status CanAddMasked(const std::string& site, size_t length) const;
  absl::Status AddMasked(const std::string& site, std::span<const uint32_t> masked);
  // Closes what is complete or past its time. `live`: the participants whose
  // tasks are still open or answered (a failed one is not waited for).
  // Returns true when a stage closed.
  bool Advance(const std::set<std::string>& live, int64_t now);
  // The last stage closed (or the round failed).
  bool done() const { return stage_ > 4 || !failure_.empty(); }
  const std::string& failure() const { return failure_; }

  // The weighted mean of the decoded differences of the sites in the sum
  // (sum over them of weight x difference, divided by their weights).
  absl::StatusOr<std::vector<double>> Mean(double bound) const;
  // "3 of 3 sites in the sum" (+ ", 1 dropped after sharing, its masks removed").
  std::string Summary() const;

 private:
  void Close(int64_t now);

  std::string ca_pem_;
  secagg::Params params_;
  std::map<std::string, double> weights_;
  int64_t advertise_until_ms_;
  int64_t stage_ms_;
  secagg::ServerSession session_;
  int stage_ = 1;  // 1 advertise, 2 share, 3 mask, 4 reveal, 5 done
  int64_t stage_opened_ms_ = 0;
  std::string failure_;
  std::set<std::string> advertised_, shared_, masked_, revealed_;
  std::vector<v1::SecAggKeys> roster_;
  std::vector<std::string> u2_, u3_;
};

}  // namespace fedtune::coordinator
