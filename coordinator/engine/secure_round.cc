#include "coordinator/engine/secure_round.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/core/status.h"
#include "common/secagg/wire.h"

namespace fedtune::coordinator {

SecureRound::SecureRound(secagg::Params params, std::map<std::string, double> weights, int64_t advertise_until_ms,
                         int64_t stage_ms, std::string ca_pem)
    : ca_pem_(std::move(ca_pem)),
      params_(std::move(params)),
      weights_(std::move(weights)),
      advertise_until_ms_(advertise_until_ms),
      stage_ms_(stage_ms),
      session_(params_) {}

double SecureRound::weight(const std::string& site) const {
  auto it = weights_.find(site);
  return it == weights_.end() ? 0.0 : it->second;
}

absl::StatusOr<v1::SecAggResponse> SecureRound::Handle(const std::string& site, const v1::SecAggRequest& request) {
  if (!weights_.count(site)) return absl::PermissionDeniedError("this site takes no part in the round");
  if (!failure_.empty()) return absl::FailedPreconditionError(absl::StrCat("secure aggregation failed: ", failure_));
  auto in = [](const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); };
  v1::SecAggResponse out;
  switch (request.stage()) {
    case v1::SEC_AGG_STAGE_ADVERTISE: {
      if (stage_ == 1 && !advertised_.count(site)) {
        ASSIGN_OR_RETURN(secagg::Advertisement a, secagg::FromWire(request.keys()));
        if (a.site_id != site) return absl::PermissionDeniedError("keys advertised in another site's name");
        // Keys every other site would refuse are refused here, so that one
        // bad site cannot fail the round for all: its signature (when the
        // federation's CA is known) and keys an agreement can use.
        if (!ca_pem_.empty()) {
          RETURN_IF_ERROR(secagg::VerifySigned(ca_pem_, a.certificate_pem, site,
                                               secagg::AdvertisedBytes(params_, site, a.cipher_public, a.mask_public),
                                               a.signature));
        }
        ASSIGN_OR_RETURN(secagg::KeyPair probe, secagg::GenerateKeyPair());
        for (const secagg::Key* k : {&a.cipher_public, &a.mask_public}) {
          if (!secagg::Agree(probe.private_key, *k, "probe").ok()) {
            return absl::InvalidArgumentError("an advertised public key no agreement can use");
          }
        }
        RETURN_IF_ERROR(session_.AddAdvertisement(std::move(a)));
        advertised_.insert(site);
      }
      if (stage_ > 1) {
        if (!advertised_.count(site)) {
          return absl::FailedPreconditionError("advertising closed without this site's keys: it sits this round out");
        }
        out.set_ready(true);
        for (const auto& k : roster_) *out.add_roster() = k;
      }
      return out;
    }
    case v1::SEC_AGG_STAGE_SHARE: {
      if (stage_ < 2) return out;
      if (stage_ == 2 && advertised_.count(site) && !shared_.count(site)) {
        std::vector<secagg::SealedShares> shares;
        for (const auto& s : request.shares()) shares.push_back(secagg::FromWire(s));
        RETURN_IF_ERROR(session_.AddShares(site, std::move(shares)));
        shared_.insert(site);
      }
      if (stage_ > 2) {
        if (!in(u2_, site)) return absl::FailedPreconditionError("sharing closed without this site's shares");
        out.set_ready(true);
        for (const auto& s : u2_) out.add_sites(s);
        for (const auto& s : session_.SharesFor(site)) *out.add_shares() = secagg::ToWire(s);
      }
      return out;
    }
    case v1::SEC_AGG_STAGE_MASKED_SITES: {
      if (stage_ > 3) {
        if (!in(u3_, site)) return absl::FailedPreconditionError("masking closed without this site's vector");
        out.set_ready(true);
        for (const auto& s : u3_) out.add_sites(s);
      }
      return out;
    }
    case v1::SEC_AGG_STAGE_REVEAL: {
      if (stage_ < 4) return out;
      if (stage_ > 4 && !revealed_.count(site)) {
        return absl::FailedPreconditionError("the round's masks were removed without this site's shares");
      }
      if (stage_ == 4 && !revealed_.count(site)) {
        ASSIGN_OR_RETURN(secagg::Reveal r, secagg::RevealFromWire(site, request));
        RETURN_IF_ERROR(session_.AddReveal(r));
        revealed_.insert(site);
      }
      out.set_ready(true);
      return out;
    }
    default:
      return absl::InvalidArgumentError("unknown secure aggregation stage");
  }
}

absl::Status SecureRound::CanAddMasked(const std::string& site, size_t length) const {
  if (!failure_.empty()) return absl::FailedPreconditionError(absl::StrCat("secure aggregation failed: ", failure_));
  if (stage_ != 3) return absl::FailedPreconditionError("this round takes no masked vectors now");
  if (std::find(u2_.begin(), u2_.end(), site) == u2_.end()) {
    return absl::PermissionDeniedError("this site's keys are not in the round's sum");
  }
  if (masked_.count(site)) return absl::InvalidArgumentError("this site's masked vector is already in the sum");
  if (static_cast<int64_t>(length) != params_.length) {
    return absl::InvalidArgumentError(absl::StrCat("a masked vector of ", length, " values, the round's has ", params_.length));
  }
  return absl::OkStatus();
}

absl::Status SecureRound::AddMasked(const std::string& site, std::span<const uint32_t> masked) {
  RETURN_IF_ERROR(CanAddMasked(site, masked.size()));
  RETURN_IF_ERROR(session_.AddMasked(site, masked));
  masked_.insert(site);
  return absl::OkStatus();
}

void SecureRound::Close(int64_t now) {
  ++stage_;
  stage_opened_ms_ = now;
}

bool SecureRound::Advance(const std::set<std::string>& live, int64_t now) {
  const int before = stage_;
  while (!done()) {
    const bool timed_out = now >= stage_opened_ms_ + stage_ms_;
    if (stage_ == 1) {
      const bool all = std::all_of(live.begin(), live.end(), [&](const std::string& s) { return advertised_.count(s) > 0; });
      if (!(all && !advertised_.empty()) && now < advertise_until_ms_) break;
      if (advertised_.size() < 2) {
        failure_ = absl::StrCat(advertised_.size(), " site(s) advertised keys; secure aggregation needs 2 or more");
        break;
      }
      for (const auto& a : session_.CloseAdvertising()) roster_.push_back(secagg::ToWire(a));
      Close(now);
    } else if (stage_ == 2) {
      if (shared_.size() < advertised_.size() && !timed_out) break;
      u2_ = session_.CloseSharing();
      Close(now);
    } else if (stage_ == 3) {
      if (masked_.size() < u2_.size() && !timed_out) break;
      u3_ = session_.CloseMasking();
      if (u3_.size() < 2) {
        failure_ = absl::StrCat(u3_.size(), " masked vector(s) arrived; a sum needs 2 or more");
        break;
      }
      Close(now);
    } else if (stage_ == 4) {
      if (revealed_.size() < u3_.size() && !timed_out) break;
      Close(now);
    }
  }
  return stage_ != before || !failure_.empty();
}

absl::StatusOr<std::vector<double>> SecureRound::Mean(double bound) const {
  if (!failure_.empty()) return absl::FailedPreconditionError(failure_);
  if (stage_ <= 4) return absl::FailedPreconditionError("the shares that remove the masks did not all arrive in time");
  ASSIGN_OR_RETURN(std::vector<uint32_t> sum, session_.Unmasked());
  double total = 0;
  for (const std::string& s : u3_) total += weight(s);
  if (!(total > 0)) return absl::FailedPreconditionError("the sites in the sum carry no weight");
  std::vector<double> mean = secagg::Decode(sum, bound);
  for (double& v : mean) v /= total;
  return mean;
}

std::string SecureRound::Summary() const {
  const size_t dropped = u2_.size() - u3_.size();
  return absl::StrCat("securely aggregated: ", u3_.size(), " of ", weights_.size(), " sites in the sum",
                      dropped > 0 ? absl::StrCat(", ", dropped, " dropped after sharing (masks removed)") : "");
}

}  // namespace fedtune::coordinator
