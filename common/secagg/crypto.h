// The primitives of secure aggregation, all from OpenSSL 3: X25519 key
// agreement with HKDF-SHA256, a pseudo-random generator (AES-256-CTR key
// stream) that expands a 32-byte seed into a mask, AES-256-GCM for the
// shares a site sends another through the coordinator, Shamir secret
// sharing over GF(2^8), and signatures with the federation's certificates
// (so that a relayed public key is the site's and not the relay's).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::secagg {

using Key = std::array<uint8_t, 32>;

// A fresh random 32-byte value (RAND_bytes).
absl::StatusOr<Key> RandomKey();

struct KeyPair {
  Key public_key{};
  Key private_key{};
};
absl::StatusOr<KeyPair> GenerateKeyPair();
// The X25519 public key of `private_key` (to check a reconstructed key).
absl::StatusOr<Key> PublicKeyOf(const Key& private_key);

// X25519(private_key, peer_public) through HKDF-SHA256 with `label` as info:
// both ends of a pair derive the same key, and different labels give
// independent keys from one agreement.
absl::StatusOr<Key> Agree(const Key& private_key, const Key& peer_public, std::string_view label);

// Adds (or subtracts) the PRG stream of `seed` to `values`, element by
// element modulo 2^32. The stream is AES-256-CTR under `seed` from a zero
// counter, read as little-endian 32-bit words.
absl::Status ApplyMask(const Key& seed, bool subtract, std::span<uint32_t> values);

// AES-256-GCM with a random 96-bit nonce: nonce || ciphertext || tag.
// `aad` binds the ciphertext to its context (job, round, sender, receiver).
absl::StatusOr<std::string> Seal(const Key& key, std::string_view aad, std::string_view plaintext);
// INVALID_ARGUMENT when the tag does not verify (wrong key, context or bytes).
absl::StatusOr<std::string> Unseal(const Key& key, std::string_view aad, std::string_view sealed);

// One Shamir share: the evaluation at x (1..255) of a random polynomial of
// degree threshold-1 per byte of the secret, whose constant is that byte.
struct Share {
  uint8_t x = 0;
  std::vector<uint8_t> y;
};
// Shares of `secret` at `xs` (distinct, non-zero); any `threshold` of them
// give the secret back, fewer say nothing about it.
absl::StatusOr<std::vector<Share>> Split(std::span<const uint8_t> secret, int threshold, std::span<const uint8_t> xs);
// The secret from at least `threshold` shares with distinct x (Lagrange at
// 0); INVALID_ARGUMENT with fewer, duplicates or unequal lengths.
absl::StatusOr<std::vector<uint8_t>> Combine(std::span<const Share> shares, int threshold);

// Signs `message` with the private key in `key_pem` (EC or Ed25519: what
// fedtune-certs issues), SHA-256 where the algorithm takes a digest.
absl::StatusOr<std::string> Sign(const std::string& key_pem, std::string_view message);
// Verifies that `certificate_pem` was issued by the CA in `ca_pem`, names
// `site_id` as its common name, and signed `message` as `signature`.
// PERMISSION_DENIED saying which of these failed.
absl::Status VerifySigned(const std::string& ca_pem, const std::string& certificate_pem, const std::string& site_id,
                          std::string_view message, std::string_view signature);

}  // namespace fedtune::secagg
