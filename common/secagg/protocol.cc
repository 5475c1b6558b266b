#include "common/secagg/protocol.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/core/status.h"

namespace fedtune::secagg {
namespace {

constexpr char kSharesLabel[] = "fedtune secagg v1 shares";

// Everything signed, sealed or derived names the job, the round and the
// round's graph seed (fresh for every attempt), so nothing of one attempt
// can be replayed in another.
std::string MaskLabel(const Params& p) {
  return absl::StrCat("fedtune secagg v1 mask|", p.job_id, "|", p.round, "|", p.graph_seed);
}

std::string ShareAad(const Params& p, const std::string& from, const std::string& to) {
  return absl::StrCat("fedtune secagg v1|", p.job_id, "|", p.round, "|", p.graph_seed, "|", from, "|", to);
}

// The sites holding shares of `owner`: its neighbours and itself, sorted;
// the share of holder i is evaluated at x = i + 1.
std::vector<std::string> Holders(const std::map<std::string, std::vector<std::string>>& graph, const std::string& owner) {
  std::vector<std::string> h = graph.at(owner);
  h.push_back(owner);
  std::sort(h.begin(), h.end());
  return h;
}

bool Contains(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

// The neighbourhoods and threshold of a roster of `n` sites under `p`.
struct Graph {
  std::map<std::string, std::vector<std::string>> neighbours;
  int threshold = 0;
};
absl::StatusOr<Graph> MakeGraph(const Params& p, const std::vector<std::string>& sites) {
  const int n = static_cast<int>(sites.size());
  const int degree = std::min(p.degree > 0 ? p.degree : DefaultDegree(n), std::max(0, n - 1));
  if (degree + 1 > 255) return absl::InvalidArgumentError("secure aggregation: at most 254 neighbours per site");
  Graph g;
  g.neighbours = Neighbourhoods(sites, degree, p.graph_seed);
  int smallest = n;
  for (const auto& [site, nb] : g.neighbours) smallest = std::min(smallest, static_cast<int>(nb.size()));
  g.threshold = p.threshold > 0 ? p.threshold : DefaultThreshold(smallest);
  return g;
}

}  // namespace

double Scale(double bound) { return std::ldexp(1.0, 30) / bound; }

std::vector<uint32_t> Encode(std::span<const float> values, double weight, double bound, int64_t* clipped) {
  const double scale = Scale(bound);
  std::vector<uint32_t> out(values.size());
  int64_t n_clipped = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    double v = values[i];
    if (!(v >= -bound)) {  // also NaN: counted and sent as -bound
      v = -bound;
      ++n_clipped;
    } else if (v > bound) {
      v = bound;
      ++n_clipped;
    }
    out[i] = static_cast<uint32_t>(static_cast<int32_t>(std::llround(weight * v * scale)));
  }
  if (clipped != nullptr) *clipped = n_clipped;
  return out;
}

std::vector<double> Decode(std::span<const uint32_t> sum, double bound) {
  const double scale = Scale(bound);
  std::vector<double> out(sum.size());
  for (size_t i = 0; i < sum.size(); ++i) out[i] = static_cast<int32_t>(sum[i]) / scale;
  return out;
}

double QuantizationError(int sites, double bound) { return 0.5 * sites / Scale(bound); }

int DefaultDegree(int sites) {
  if (sites <= 10) return std::max(0, sites - 1);
  const int log2n = static_cast<int>(std::ceil(std::log2(static_cast<double>(sites))));
  return std::min(sites - 1, 2 * log2n + 2);
}

int DefaultThreshold(int degree) { return (degree + 1) / 2 + 1; }

std::map<std::string, std::vector<std::string>> Neighbourhoods(std::vector<std::string> sites, int degree,
                                                               uint64_t seed) {
  std::sort(sites.begin(), sites.end());
  const size_t n = sites.size();
  std::map<std::string, std::vector<std::string>> graph;
  for (const std::string& s : sites) graph[s];
  if (n < 2 || degree <= 0) return graph;
  if (static_cast<size_t>(degree) >= n - 1) {
    for (const std::string& a : sites) {
      for (const std::string& b : sites) {
        if (a != b) graph[a].push_back(b);
      }
    }
    return graph;
  }
  // Fisher-Yates with the raw output of mt19937_64 (the same on every
  // platform, unlike std::shuffle's use of it).
  std::mt19937_64 rng(seed);
  for (size_t i = n - 1; i > 0; --i) std::swap(sites[i], sites[rng() % (i + 1)]);
  const size_t half = static_cast<size_t>((degree + 1) / 2);
  for (size_t i = 0; i < n; ++i) {
    for (size_t d = 1; d <= half; ++d) {
      const std::string& a = sites[i];
      const std::string& b = sites[(i + d) % n];
      if (!Contains(graph[a], b)) graph[a].push_back(b);
      if (!Contains(graph[b], a)) graph[b].push_back(a);
    }
  }
  for (auto& [s, nb] : graph) std::sort(nb.begin(), nb.end());
  return graph;
}

std::string AdvertisedBytes(const Params& params, const std::string& site_id, const Key& cipher_public,
                            const Key& mask_public) {
  std::string out = absl::StrCat("fedtune secagg v1 advertise|", params.job_id, "|", params.round, "|",
                                 params.graph_seed, "|", site_id, "|");
  out.append(reinterpret_cast<const char*>(cipher_public.data()), cipher_public.size());
  out.append(reinterpret_cast<const char*>(mask_public.data()), mask_public.size());
  return out;
}

// ---- site ----------------------------------------------------------------------

struct SiteSession::State {
  std::string me;
  Params params;
  KeyPair cipher;
  KeyPair mask;
  Key seed{};
  Advertisement advertisement;
  std::map<std::string, Advertisement> roster;
  Graph graph;
  std::vector<std::string> shared;
  std::map<std::string, std::pair<Share, Share>> held;  // owner -> (seed share, key share)
  std::set<std::string> unopenable;                     // senders whose share for this site did not open
  enum Stage { kAdvertised, kShared, kMasked, kRevealed } stage = kAdvertised;

  ~State() {
    OPENSSL_cleanse(cipher.private_key.data(), cipher.private_key.size());
    OPENSSL_cleanse(mask.private_key.data(), mask.private_key.size());
    OPENSSL_cleanse(seed.data(), seed.size());
  }
};

SiteSession::SiteSession(std::unique_ptr<State> state) : state_(std::move(state)) {}
SiteSession::~SiteSession() = default;

absl::StatusOr<std::unique_ptr<SiteSession>> SiteSession::Start(const std::string& site_id, const Params& params,
                                                                const std::string& certificate_pem,
                                                                const Signer& sign) {
  auto st = std::make_unique<State>();
  st->me = site_id;
  st->params = params;
  ASSIGN_OR_RETURN(st->cipher, GenerateKeyPair());
  ASSIGN_OR_RETURN(st->mask, GenerateKeyPair());
  ASSIGN_OR_RETURN(st->seed, RandomKey());
  Advertisement& a = st->advertisement;
  a.site_id = site_id;
  a.cipher_public = st->cipher.public_key;
  a.mask_public = st->mask.public_key;
  a.certificate_pem = certificate_pem;
  ASSIGN_OR_RETURN(a.signature, sign(AdvertisedBytes(params, site_id, a.cipher_public, a.mask_public)));
  return std::unique_ptr<SiteSession>(new SiteSession(std::move(st)));
}

const Advertisement& SiteSession::advertisement() const { return state_->advertisement; }

absl::StatusOr<std::vector<SealedShares>> SiteSession::ShareKeys(const std::vector<Advertisement>& roster,
                                                                 const Verifier& verify) {
  State& st = *state_;
  if (st.stage != State::kAdvertised) return absl::FailedPreconditionError("secure aggregation: keys already shared");
  std::vector<std::string> ids;
  for (const Advertisement& a : roster) {
    if (st.roster.count(a.site_id)) {
      return absl::InvalidArgumentError(absl::StrCat("secure aggregation: ", a.site_id, " advertised twice"));
    }
    if (a.site_id == st.me) {
      if (a.cipher_public != st.cipher.public_key || a.mask_public != st.mask.public_key) {
        return absl::PermissionDeniedError("secure aggregation: the roster holds other keys for this site");
      }
    } else {
      RETURN_IF_ERROR(verify(a.site_id, a.certificate_pem,
                             AdvertisedBytes(st.params, a.site_id, a.cipher_public, a.mask_public), a.signature));
    }
    st.roster[a.site_id] = a;
    ids.push_back(a.site_id);
  }
  if (!st.roster.count(st.me)) return absl::InvalidArgumentError("secure aggregation: the roster leaves this site out");
  ASSIGN_OR_RETURN(st.graph, MakeGraph(st.params, ids));
  const std::vector<std::string> holders = Holders(st.graph.neighbours, st.me);
  // A threshold that is not a strict majority of the holders would let
  // fewer sites than the protocol assumes open this site's secrets.
  if (st.graph.threshold <= static_cast<int>(holders.size()) / 2) {
    return absl::PermissionDeniedError(absl::StrCat("secure aggregation: a threshold of ", st.graph.threshold, " for ",
                                                    holders.size(), " holders is not a majority"));
  }
  if (static_cast<int>(holders.size()) < st.graph.threshold || st.graph.threshold < 2) {
    return absl::FailedPreconditionError(absl::StrCat("secure aggregation needs at least ", std::max(2, st.graph.threshold),
                                                      " sites in a neighbourhood; this round has ", holders.size()));
  }
  std::vector<uint8_t> xs;
  for (size_t i = 0; i < holders.size(); ++i) xs.push_back(static_cast<uint8_t>(i + 1));
  ASSIGN_OR_RETURN(std::vector<Share> seed_shares, Split(st.seed, st.graph.threshold, xs));
  ASSIGN_OR_RETURN(std::vector<Share> key_shares, Split(st.mask.private_key, st.graph.threshold, xs));
  std::vector<SealedShares> out;
  for (size_t i = 0; i < holders.size(); ++i) {
    std::string plain(1, static_cast<char>(xs[i]));
    plain.append(seed_shares[i].y.begin(), seed_shares[i].y.end());
    plain.append(key_shares[i].y.begin(), key_shares[i].y.end());
    ASSIGN_OR_RETURN(Key key, Agree(st.cipher.private_key, st.roster[holders[i]].cipher_public, kSharesLabel));
    ASSIGN_OR_RETURN(std::string sealed, Seal(key, ShareAad(st.params, st.me, holders[i]), plain));
    out.push_back(SealedShares{st.me, holders[i], std::move(sealed)});
  }
  st.stage = State::kShared;
  return out;
}

absl::StatusOr<std::vector<uint32_t>> SiteSession::Mask(const std::vector<SealedShares>& received,
                                                        const std::vector<std::string>& shared,
                                                        std::vector<uint32_t> encoded) {
  State& st = *state_;
  if (st.stage != State::kShared) return absl::FailedPreconditionError("secure aggregation: not at the masking stage");
  if (static_cast<int64_t>(encoded.size()) != st.params.length) {
    return absl::InvalidArgumentError(
        absl::StrCat("secure aggregation: a vector of ", encoded.size(), " values, the round has ", st.params.length));
  }
  if (!Contains(shared, st.me)) return absl::InvalidArgumentError("secure aggregation: this site's shares are missing");
  const std::vector<std::string>& mine = st.graph.neighbours.at(st.me);
  for (const SealedShares& s : received) {
    if (s.to != st.me || !Contains(shared, s.from) || (s.from != st.me && !Contains(mine, s.from))) {
      return absl::PermissionDeniedError(absl::StrCat("secure aggregation: a share from ", s.from, " not meant for this site"));
    }
    ASSIGN_OR_RETURN(Key key, Agree(st.cipher.private_key, st.roster.at(s.from).cipher_public, kSharesLabel));
    // A share that does not open (a hostile sender, or bytes changed on the
    // way) is not this site's to hold: it goes on without it, and the
    // sender's secrets rest on its other holders.
    auto opened = Unseal(key, ShareAad(st.params, s.from, st.me), s.sealed);
    if (!opened.ok() || opened->size() != 65) {
      if (s.from == st.me) return absl::PermissionDeniedError("secure aggregation: this site's own share was altered");
      st.unopenable.insert(s.from);
      continue;
    }
    const std::string& plain = *opened;
    const auto* p = reinterpret_cast<const uint8_t*>(plain.data());
    st.held[s.from] = {Share{p[0], std::vector<uint8_t>(p + 1, p + 33)}, Share{p[0], std::vector<uint8_t>(p + 33, p + 65)}};
  }
  for (const std::string& v : shared) {
    if ((v == st.me || Contains(mine, v)) && !st.held.count(v) && !st.unopenable.count(v)) {
      return absl::FailedPreconditionError(
          absl::StrCat("secure aggregation: ", v, " shared its keys but its share for this site was not relayed"));
    }
  }
  RETURN_IF_ERROR(ApplyMask(st.seed, false, encoded));
  const std::string label = MaskLabel(st.params);
  for (const std::string& v : mine) {
    if (!Contains(shared, v)) continue;
    ASSIGN_OR_RETURN(Key pair, Agree(st.mask.private_key, st.roster.at(v).mask_public, label));
    RETURN_IF_ERROR(ApplyMask(pair, /*subtract=*/!(st.me < v), encoded));
  }
  st.shared = shared;
  st.stage = State::kMasked;
  return encoded;
}

absl::StatusOr<Reveal> SiteSession::Unmask(const std::vector<std::string>& masked) {
  State& st = *state_;
  if (st.stage != State::kMasked) {
    return absl::FailedPreconditionError("secure aggregation: shares are revealed once per round, after masking");
  }
  if (!Contains(masked, st.me)) return absl::InvalidArgumentError("secure aggregation: this site's vector is missing");
  for (const std::string& u : masked) {
    if (!Contains(st.shared, u)) {
      return absl::PermissionDeniedError(absl::StrCat("secure aggregation: ", u, " sent a vector without sharing keys"));
    }
  }
  // The sum must rest on enough of this neighbourhood for the masks to hide
  // each vector.
  const std::vector<std::string> holders = Holders(st.graph.neighbours, st.me);
  int present = 0;
  for (const std::string& h : holders) present += Contains(masked, h);
  if (present < st.graph.threshold) {
    return absl::FailedPreconditionError(absl::StrCat("secure aggregation: only ", present, " of ", holders.size(),
                                                      " sites of this neighbourhood sent vectors; ", st.graph.threshold,
                                                      " are needed"));
  }
  Reveal r;
  r.from = st.me;
  for (const auto& [owner, shares] : st.held) {
    if (Contains(masked, owner)) r.seed_shares[owner] = shares.first;
    else r.key_shares[owner] = shares.second;
  }
  st.stage = State::kRevealed;
  st.held.clear();
  return r;
}

// ---- coordinator -----------------------------------------------------------------

struct ServerSession::State {
  Params params;
  std::map<std::string, Advertisement> advertised;
  Graph graph;
  std::map<std::string, std::vector<SealedShares>> shares;  // by sender
  std::vector<std::string> shared, masked;
  std::vector<uint32_t> sum;
  std::vector<Reveal> reveals;
  enum Stage { kAdvertising, kSharing, kMasking, kRevealing } stage = kAdvertising;
};

ServerSession::ServerSession(const Params& params) : state_(std::make_unique<State>()) {
  state_->params = params;
  state_->sum.assign(static_cast<size_t>(std::max<int64_t>(0, params.length)), 0);
}
ServerSession::~ServerSession() = default;

const std::map<std::string, std::vector<std::string>>& ServerSession::neighbourhoods() const {
  return state_->graph.neighbours;
}
int ServerSession::threshold() const { return state_->graph.threshold; }

absl::Status ServerSession::AddAdvertisement(Advertisement a) {
  State& st = *state_;
  if (st.stage != State::kAdvertising) return absl::FailedPreconditionError("secure aggregation: advertising is closed");
  if (st.advertised.count(a.site_id)) {
    return absl::InvalidArgumentError(absl::StrCat("secure aggregation: ", a.site_id, " advertised twice"));
  }
  st.advertised[a.site_id] = std::move(a);
  return absl::OkStatus();
}

std::vector<Advertisement> ServerSession::CloseAdvertising() {
  State& st = *state_;
  std::vector<Advertisement> roster;
  std::vector<std::string> ids;
  for (const auto& [id, a] : st.advertised) {
    roster.push_back(a);
    ids.push_back(id);
  }
  if (st.stage == State::kAdvertising) {
    auto graph = MakeGraph(st.params, ids);
    if (graph.ok()) st.graph = std::move(*graph);
    st.stage = State::kSharing;
  }
  return roster;
}

absl::Status ServerSession::AddShares(const std::string& from, std::vector<SealedShares> shares) {
  State& st = *state_;
  if (st.stage != State::kSharing) return absl::FailedPreconditionError("secure aggregation: sharing is closed");
  if (!st.graph.neighbours.count(from)) {
    return absl::PermissionDeniedError(absl::StrCat("secure aggregation: ", from, " did not advertise keys"));
  }
  if (st.shares.count(from)) return absl::InvalidArgumentError(absl::StrCat("secure aggregation: ", from, " shared twice"));
  std::vector<std::string> to;
  for (const SealedShares& s : shares) {
    if (s.from != from) return absl::PermissionDeniedError("secure aggregation: shares sent in another site's name");
    to.push_back(s.to);
  }
  std::sort(to.begin(), to.end());
  if (to != Holders(st.graph.neighbours, from)) {
    return absl::InvalidArgumentError(absl::StrCat("secure aggregation: ", from, " did not send one share per holder"));
  }
  st.shares[from] = std::move(shares);
  return absl::OkStatus();
}

std::vector<std::string> ServerSession::CloseSharing() {
  State& st = *state_;
  if (st.stage == State::kSharing) {
    st.shared.clear();
    for (const auto& [from, s] : st.shares) st.shared.push_back(from);
    st.stage = State::kMasking;
  }
  return st.shared;
}

std::vector<SealedShares> ServerSession::SharesFor(const std::string& to) const {
  std::vector<SealedShares> out;
  for (const auto& [from, shares] : state_->shares) {
    for (const SealedShares& s : shares) {
      if (s.to == to) out.push_back(s);
    }
  }
  return out;
}

absl::Status ServerSession::AddMasked(const std::string& from, std::span<const uint32_t> masked) {
  State& st = *state_;
  if (st.stage != State::kMasking) return absl::FailedPreconditionError("secure aggregation: masking is closed");
  if (!Contains(st.shared, from)) {
    return absl::PermissionDeniedError(absl::StrCat("secure aggregation: ", from, " did not share its keys"));
  }
  if (Contains(st.masked, from)) return absl::InvalidArgumentError(absl::StrCat("secure aggregation: ", from, " sent twice"));
  if (masked.size() != st.sum.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("secure aggregation: ", masked.size(), " values, the round has ", st.sum.size()));
  }
  for (size_t i = 0; i < masked.size(); ++i) st.sum[i] += masked[i];
  st.masked.push_back(from);
  return absl::OkStatus();
}

std::vector<std::string> ServerSession::CloseMasking() {
  State& st = *state_;
  if (st.stage == State::kMasking) {
    std::sort(st.masked.begin(), st.masked.end());
    st.stage = State::kRevealing;
  }
  return st.masked;
}

absl::Status ServerSession::AddReveal(const Reveal& reveal) {
  State& st = *state_;
  if (st.stage != State::kRevealing) return absl::FailedPreconditionError("secure aggregation: not revealing");
  if (!Contains(st.masked, reveal.from)) {
    return absl::PermissionDeniedError(absl::StrCat("secure aggregation: ", reveal.from, " sent no vector"));
  }
  for (const Reveal& r : st.reveals) {
    if (r.from == reveal.from) return absl::InvalidArgumentError("secure aggregation: revealed twice");
  }
  // Each share must be one the sender holds: of an owner whose holders
  // include it, at the sender's point among them.
  auto held = [&](const std::string& owner, const Share& s) {
    if (!st.graph.neighbours.count(owner)) return false;
    const std::vector<std::string> holders = Holders(st.graph.neighbours, owner);
    const auto it = std::find(holders.begin(), holders.end(), reveal.from);
    return it != holders.end() && s.x == static_cast<uint8_t>(it - holders.begin() + 1) && s.y.size() == 32;
  };
  for (const auto& [owner, s] : reveal.seed_shares) {
    if (!Contains(st.masked, owner)) return absl::InvalidArgumentError("secure aggregation: a seed share of a dropped site");
    if (!held(owner, s)) return absl::InvalidArgumentError("secure aggregation: a seed share this site does not hold");
  }
  for (const auto& [owner, s] : reveal.key_shares) {
    if (Contains(st.masked, owner) || !Contains(st.shared, owner)) {
      return absl::InvalidArgumentError("secure aggregation: a key share of a site that was not dropped");
    }
    if (!held(owner, s)) return absl::InvalidArgumentError("secure aggregation: a key share this site does not hold");
  }
  st.reveals.push_back(reveal);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> ServerSession::Unmasked() const {
  const State& st = *state_;
  if (st.stage != State::kRevealing) return absl::FailedPreconditionError("secure aggregation: the round is not complete");
  std::vector<uint32_t> sum = st.sum;
  auto gather = [&](const std::string& owner, bool seed) {
    std::vector<Share> shares;
    for (const Reveal& r : st.reveals) {
      const auto& m = seed ? r.seed_shares : r.key_shares;
      if (auto it = m.find(owner); it != m.end()) shares.push_back(it->second);
    }
    return shares;
  };
  for (const std::string& u : st.masked) {
    const std::vector<Share> shares = gather(u, true);
    auto seed = Combine(shares, st.graph.threshold);
    if (!seed.ok() || seed->size() != 32) {
      return absl::FailedPreconditionError(absl::StrCat("secure aggregation: ", shares.size(), " shares of ", u,
                                                        "'s seed revealed, ", st.graph.threshold, " needed"));
    }
    Key k{};
    std::copy(seed->begin(), seed->end(), k.begin());
    RETURN_IF_ERROR(ApplyMask(k, true, sum));
  }
  const std::string label = MaskLabel(st.params);
  for (const std::string& v : st.shared) {
    if (Contains(st.masked, v)) continue;
    const std::vector<Share> shares = gather(v, false);
    auto secret = Combine(shares, st.graph.threshold);
    if (!secret.ok() || secret->size() != 32) {
      return absl::FailedPreconditionError(absl::StrCat("secure aggregation: ", shares.size(), " shares of dropped ", v,
                                                        "'s key revealed, ", st.graph.threshold, " needed"));
    }
    Key key{};
    std::copy(secret->begin(), secret->end(), key.begin());
    ASSIGN_OR_RETURN(Key pub, PublicKeyOf(key));
    if (pub != st.advertised.at(v).mask_public) {
      return absl::FailedPreconditionError(absl::StrCat("secure aggregation: the shares revealed for ", v, " are not its key"));
    }
    for (const std::string& u : st.graph.neighbours.at(v)) {
      if (!Contains(st.masked, u)) continue;
      ASSIGN_OR_RETURN(Key pair, Agree(key, st.advertised.at(u).mask_public, label));
      // u added +PRG when u < v and -PRG otherwise: undone here.
      RETURN_IF_ERROR(ApplyMask(pair, /*subtract=*/u < v, sum));
    }
  }
  return sum;
}

}  // namespace fedtune::secagg
