// Secure aggregation's messages as they travel (fedtune.v1.SecAgg*), both
// ways, for the coordinator and the site agent.
#pragma once

#include "absl/status/statusor.h"
#include "common/secagg/protocol.h"
#include "fedtune/v1/federation.pb.h"

namespace fedtune::secagg {

v1::SecAggKeys ToWire(const Advertisement& a);
// INVALID_ARGUMENT for keys that are not 32 bytes.
absl::StatusOr<Advertisement> FromWire(const v1::SecAggKeys& k);

v1::SecAggSealed ToWire(const SealedShares& s);
SealedShares FromWire(const v1::SecAggSealed& s);

// The reveal of `r` into a request's share maps, and back (from = `site`).
void ToWire(const Reveal& r, v1::SecAggRequest* request);
absl::StatusOr<Reveal> RevealFromWire(const std::string& site, const v1::SecAggRequest& request);

// The round's parameters as a task carries them.
Params ParamsOf(const std::string& job_id, int round, const v1::SecureAggregationConfig& config);

// A vector as the bytes of a masked upload (little-endian uint32) and back;
// INVALID_ARGUMENT when the size is not 4 x `length`.
std::string VectorBytes(std::span<const uint32_t> v);
absl::StatusOr<std::vector<uint32_t>> VectorFromBytes(std::string_view bytes, int64_t length);

}  // namespace fedtune::secagg
