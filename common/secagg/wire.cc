#include "common/secagg/wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace fedtune::secagg {
namespace {

absl::StatusOr<Key> KeyFrom(const std::string& bytes, std::string_view what) {
  if (bytes.size() != 32) {
    return absl::InvalidArgumentError(absl::StrCat("secure aggregation: a ", std::string(what), " of ", bytes.size(),
                                                   " bytes (32 expected)"));
  }
  Key k{};
  std::memcpy(k.data(), bytes.data(), 32);
  return k;
}

std::string KeyBytes(const Key& k) { return std::string(reinterpret_cast<const char*>(k.data()), k.size()); }

absl::StatusOr<std::map<std::string, Share>> SharesFrom(const google::protobuf::Map<std::string, v1::SecAggShare>& m) {
  std::map<std::string, Share> out;
  for (const auto& [owner, s] : m) {
    if (s.x() < 1 || s.x() > 255 || s.y().size() != 32) {
      return absl::InvalidArgumentError("secure aggregation: a malformed share in a reveal");
    }
    out[owner] = Share{static_cast<uint8_t>(s.x()), std::vector<uint8_t>(s.y().begin(), s.y().end())};
  }
  return out;
}

void SharesTo(const std::map<std::string, Share>& in, google::protobuf::Map<std::string, v1::SecAggShare>* out) {
  for (const auto& [owner, s] : in) {
    v1::SecAggShare w;
    w.set_x(s.x);
    w.set_y(std::string(s.y.begin(), s.y.end()));
    (*out)[owner] = w;
  }
}

}  // namespace

v1::SecAggKeys ToWire(const Advertisement& a) {
  v1::SecAggKeys k;
  k.set_site_id(a.site_id);
  k.set_cipher_public(KeyBytes(a.cipher_public));
  k.set_mask_public(KeyBytes(a.mask_public));
  k.set_certificate_pem(a.certificate_pem);
  k.set_signature(a.signature);
  return k;
}

absl::StatusOr<Advertisement> FromWire(const v1::SecAggKeys& k) {
  Advertisement a;
  a.site_id = k.site_id();
  auto cipher = KeyFrom(k.cipher_public(), "public key");
  if (!cipher.ok()) return cipher.status();
  auto mask = KeyFrom(k.mask_public(), "public key");
  if (!mask.ok()) return mask.status();
  a.cipher_public = *cipher;
  a.mask_public = *mask;
  a.certificate_pem = k.certificate_pem();
  a.signature = k.signature();
  return a;
}

v1::SecAggSealed ToWire(const SealedShares& s) {
  v1::SecAggSealed w;
  w.set_from_site(s.from);
  w.set_to_site(s.to);
  w.set_sealed(s.sealed);
  return w;
}

SealedShares FromWire(const v1::SecAggSealed& s) { return SealedShares{s.from_site(), s.to_site(), s.sealed()}; }

void ToWire(const Reveal& r, v1::SecAggRequest* request) {
  SharesTo(r.seed_shares, request->mutable_seed_shares());
  SharesTo(r.key_shares, request->mutable_key_shares());
}

absl::StatusOr<Reveal> RevealFromWire(const std::string& site, const v1::SecAggRequest& request) {
  Reveal r;
  r.from = site;
  auto seeds = SharesFrom(request.seed_shares());
  if (!seeds.ok()) return seeds.status();
  auto keys = SharesFrom(request.key_shares());
  if (!keys.ok()) return keys.status();
  r.seed_shares = std::move(*seeds);
  r.key_shares = std::move(*keys);
  return r;
}

Params ParamsOf(const std::string& job_id, int round, const v1::SecureAggregationConfig& config) {
  Params p;
  p.job_id = job_id;
  p.round = round;
  p.length = config.length();
  p.graph_seed = config.graph_seed();
  p.degree = config.degree();
  p.threshold = config.threshold();
  return p;
}

std::string VectorBytes(std::span<const uint32_t> v) {
  std::string out(v.size() * 4, '\0');
  std::memcpy(out.data(), v.data(), out.size());  // little-endian hosts (x86-64, aarch64)
  return out;
}

absl::StatusOr<std::vector<uint32_t>> VectorFromBytes(std::string_view bytes, int64_t length) {
  if (length < 0 || static_cast<int64_t>(bytes.size()) != 4 * length) {
    return absl::InvalidArgumentError(absl::StrCat("secure aggregation: a masked vector of ", bytes.size(),
                                                   " bytes, the round's has ", 4 * length));
  }
  std::vector<uint32_t> v(static_cast<size_t>(length));
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

}  // namespace fedtune::secagg
