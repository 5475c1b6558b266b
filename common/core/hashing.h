// SHA-256 and HMAC-SHA256 over OpenSSL's EVP interface.
//
// Digests identify backbones, weight versions and transfers (hex strings on
// the wire); HMAC-SHA256 under a site's secret key derives pseudonyms and UIDs.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune {

using Digest = std::array<uint8_t, 32>;

// Lower-case hexadecimal of `bytes`.
std::string ToHex(std::span<const uint8_t> bytes);

// The first 8 bytes of a digest as a big-endian integer (uniform when the
// digest is): for deriving numbers such as split draws and date shifts.
uint64_t DigestPrefix64(const Digest& d);

// Parses 64 hex characters (either case) into a digest; INVALID_ARGUMENT otherwise.
absl::StatusOr<Digest> DigestFromHex(std::string_view hex);

// One-shot SHA-256 (FIPS 180-4).
Digest Sha256(std::span<const std::byte> data);
Digest Sha256(std::string_view data);
std::string Sha256Hex(std::string_view data);

// SHA-256 of a whole file, read in blocks; NOT_FOUND / DATA_LOSS on I/O errors.
absl::StatusOr<std::string> Sha256FileHex(const std::string& path);

// Incremental SHA-256 for data that arrives in pieces (chunked transfers,
// large files). Not copyable; Finish() may be called once.
class Sha256Hasher {
 public:
  Sha256Hasher();
  ~Sha256Hasher();
  Sha256Hasher(const Sha256Hasher&) = delete;
  Sha256Hasher& operator=(const Sha256Hasher&) = delete;

  void Update(std::span<const std::byte> data);
  void Update(std::string_view data);
  Digest Finish();
  std::string FinishHex();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

// HMAC-SHA256 (RFC 2104) of `data` under `key`. Keys of any length are allowed.
Digest HmacSha256(std::span<const uint8_t> key, std::string_view data);

// `n` bytes from OpenSSL's CSPRNG (for keys). INTERNAL if it is not seeded.
absl::StatusOr<std::vector<uint8_t>> SecureRandomBytes(size_t n);

// Compares two equal-length byte strings in time independent of their content.
bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace fedtune
