// Secure aggregation (Bonawitz et al. 2017) with SecAgg+'s sparse
// neighbourhoods (Bell et al. 2020): the coordinator learns the sum of the
// sites' vectors and nothing about any one of them, and the round completes
// when sites drop out after sending their masked vector.
//
// One round, four stages, each a message from every site to the
// coordinator and an answer it relays back:
//   1. advertise: two fresh X25519 public keys per site, signed with the
//      site's certificate key; the coordinator relays them with the
//      certificates, and every site checks each against the federation's CA
//      (the coordinator cannot slip in keys of its own).
//   2. share: each site Shamir-shares its self-mask seed b and its masking
//      private key among its neighbours and itself, sealed (AES-256-GCM)
//      for each holder under an X25519 agreement the coordinator cannot make.
//   3. mask: y = x + PRG(b) + sum over neighbours v that shared of
//      +/- PRG(agreement with v), modulo 2^32 (+ towards a neighbour whose
//      id sorts after, - before); the pairwise masks cancel in the sum.
//   4. unmask: told who sent a masked vector, each site reveals, for every
//      neighbour (and itself), its share of b if that one did and its share
//      of the masking key if it did not, never both; the coordinator then
//      removes the self-masks and the dropped sites' pairwise masks.
//
// Values are encoded in fixed point modulo 2^32 (Encode / Decode below):
// the weighted sum of up to any number of sites stays exact as long as the
// weights sum to at most 1 and each value is within the bound.
//
// Transport-agnostic: the messages are plain structs; the engine and the
// site agent carry them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/secagg/crypto.h"

namespace fedtune::secagg {

// ---- fixed point ------------------------------------------------------------

// Units per 1.0 for values bounded by `bound`: 2^30 / bound, so that a sum
// whose weights add up to at most 1 stays within a signed 32-bit range.
double Scale(double bound);
// weight * value, each value clipped to [-bound, bound] first, in fixed
// point modulo 2^32. `clipped` (optional) counts the values clipped.
std::vector<uint32_t> Encode(std::span<const float> values, double weight, double bound, int64_t* clipped = nullptr);
// A sum of encodings back to real numbers.
std::vector<double> Decode(std::span<const uint32_t> sum, double bound);
// The largest error of a decoded sum of `sites` encodings (each rounds by
// at most half a unit).
double QuantizationError(int sites, double bound);

// ---- the neighbourhood graph ---------------------------------------------------

// Neighbours per site: every other site up to 10 sites, then
// 2 * ceil(log2(n)) + 2 (SecAgg+: logarithmic in n).
int DefaultDegree(int sites);
// Shares needed to reconstruct: a strict majority of the holders (the
// neighbours and the site itself).
int DefaultThreshold(int degree);
// Each site's neighbours: a ring lattice (each site joined to the degree/2
// nearest on either side) over the sites in an order shuffled by `seed`;
// the complete graph when degree >= sites - 1. Symmetric.
std::map<std::string, std::vector<std::string>> Neighbourhoods(std::vector<std::string> sites, int degree, uint64_t seed);

struct Params {
  std::string job_id;
  int round = 0;
  int degree = 0;     // 0: DefaultDegree of the sites that advertise
  int threshold = 0;  // 0: DefaultThreshold(degree)
  uint64_t graph_seed = 0;
  int64_t length = 0;  // elements of every vector
};

// ---- messages ------------------------------------------------------------------

struct Advertisement {
  std::string site_id;
  Key cipher_public{};  // seals the shares sent to this site
  Key mask_public{};    // pairwise masks with this site
  std::string certificate_pem;
  std::string signature;  // over AdvertisedBytes, by the certificate's key
};
// What a site signs: job, round, site id and both keys.
std::string AdvertisedBytes(const Params& params, const std::string& site_id, const Key& cipher_public,
                            const Key& mask_public);

struct SealedShares {
  std::string from;
  std::string to;
  std::string sealed;  // from's shares of its seed and masking key, for `to`
};

struct Reveal {
  std::string from;
  std::map<std::string, Share> seed_shares;  // owner -> share of its self-mask seed (owner sent a masked vector)
  std::map<std::string, Share> key_shares;   // owner -> share of its masking key (owner dropped)
};

using Signer = std::function<absl::StatusOr<std::string>(std::string_view message)>;
// OK when `certificate_pem` is a federation certificate of `site_id` that
// signed `message`.
using Verifier = std::function<absl::Status(const std::string& site_id, const std::string& certificate_pem,
                                            std::string_view message, std::string_view signature)>;

// ---- the site's side -------------------------------------------------------------

class SiteSession {
 public:
  // Fresh keys and seed for one round.
  static absl::StatusOr<std::unique_ptr<SiteSession>> Start(const std::string& site_id, const Params& params,
                                                            const std::string& certificate_pem, const Signer& sign);
  ~SiteSession();
  const Advertisement& advertisement() const;

  // Stage 2. Checks every advertisement with `verify` (a forged one fails the
  // stage), fixes the neighbourhoods, and seals this site's shares for each
  // neighbour and itself. FAILED_PRECONDITION when the roster leaves fewer
  // holders than the threshold.
  absl::StatusOr<std::vector<SealedShares>> ShareKeys(const std::vector<Advertisement>& roster, const Verifier& verify);
  // Stage 3. Opens the shares sealed for this site by the neighbours in
  // `shared` (the sites whose shares the coordinator holds) and masks
  // `encoded` (length params.length).
  absl::StatusOr<std::vector<uint32_t>> Mask(const std::vector<SealedShares>& received,
                                             const std::vector<std::string>& shared, std::vector<uint32_t> encoded);
  // Stage 4, answered once per round. `masked` (the sites whose masked
  // vectors arrived) must be a subset of `shared` that holds this site.
  absl::StatusOr<Reveal> Unmask(const std::vector<std::string>& masked);

 private:
  struct State;
  explicit SiteSession(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// ---- the coordinator's side -----------------------------------------------------

class ServerSession {
 public:
  explicit ServerSession(const Params& params);
  ~ServerSession();

  // Stage 1: one advertisement per site (INVALID_ARGUMENT for a second).
  absl::Status AddAdvertisement(Advertisement advertisement);
  // Closes stage 1: the roster relayed to every site (sorted by id), and
  // the neighbourhoods fixed from it.
  std::vector<Advertisement> CloseAdvertising();
  // Stage 2: a site's sealed shares, one per holder of its neighbourhood.
  absl::Status AddShares(const std::string& from, std::vector<SealedShares> shares);
  // Closes stage 2: the sites that shared (U2).
  std::vector<std::string> CloseSharing();
  std::vector<SealedShares> SharesFor(const std::string& to) const;
  // Stage 3: a masked vector of a site in U2 (summed modulo 2^32 on
  // arrival: no vector is kept).
  absl::Status AddMasked(const std::string& from, std::span<const uint32_t> masked);
  // Closes stage 3: the sites whose masked vectors are in the sum (U3).
  std::vector<std::string> CloseMasking();
  // Stage 4.
  absl::Status AddReveal(const Reveal& reveal);
  // The sum of the encoded vectors of U3. FAILED_PRECONDITION naming the
  // site whose mask cannot be removed (too few shares revealed).
  absl::StatusOr<std::vector<uint32_t>> Unmasked() const;

  const std::map<std::string, std::vector<std::string>>& neighbourhoods() const;
  int threshold() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace fedtune::secagg
