#include "common/secagg/crypto.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"

namespace fedtune::secagg {
namespace {

template <typename T, void (*Free)(T*)>
struct Deleter {
  void operator()(T* p) const { Free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, Deleter<EVP_PKEY_CTX, EVP_PKEY_CTX_free>>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, Deleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using BioPtr = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;
using KdfPtr = std::unique_ptr<EVP_KDF, Deleter<EVP_KDF, EVP_KDF_free>>;
using KdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, Deleter<EVP_KDF_CTX, EVP_KDF_CTX_free>>;

absl::Status OpenSslError(std::string_view what) { return absl::InternalError(absl::StrCat("OpenSSL: ", std::string(what))); }

// GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1, by logarithms
// to the generator 3.
struct Gf256 {
  uint8_t exp[512];
  uint8_t log[256];
  Gf256() {
    unsigned v = 1;
    for (int i = 0; i < 255; ++i) {
      exp[i] = static_cast<uint8_t>(v);
      log[v] = static_cast<uint8_t>(i);
      v ^= v << 1;  // times 3
      if (v & 0x100) v ^= 0x11b;
    }
    for (int i = 255; i < 512; ++i) exp[i] = exp[i - 255];
    log[0] = 0;
  }
  uint8_t Mul(uint8_t a, uint8_t b) const { return a == 0 || b == 0 ? 0 : exp[log[a] + log[b]]; }
  uint8_t Div(uint8_t a, uint8_t b) const { return a == 0 ? 0 : exp[log[a] + 255 - log[b]]; }
};
const Gf256& Field() {
  static const Gf256 field;
  return field;
}

}  // namespace

absl::StatusOr<Key> RandomKey() {
  Key k{};
  if (RAND_bytes(k.data(), static_cast<int>(k.size())) != 1) return OpenSslError("no random bytes");
  return k;
}

absl::StatusOr<KeyPair> GenerateKeyPair() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  if (key == nullptr) return OpenSslError("cannot generate an X25519 key");
  KeyPair pair;
  size_t len = pair.public_key.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), pair.public_key.data(), &len) != 1 || len != 32) {
    return OpenSslError("cannot read an X25519 public key");
  }
  len = pair.private_key.size();
  if (EVP_PKEY_get_raw_private_key(key.get(), pair.private_key.data(), &len) != 1 || len != 32) {
    return OpenSslError("cannot read an X25519 private key");
  }
  return pair;
}

absl::StatusOr<Key> PublicKeyOf(const Key& private_key) {
  PkeyPtr key(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
  Key out{};
  size_t len = out.size();
  if (key == nullptr || EVP_PKEY_get_raw_public_key(key.get(), out.data(), &len) != 1 || len != 32) {
    return absl::InvalidArgumentError("not an X25519 private key");
  }
  return out;
}

absl::StatusOr<Key> Agree(const Key& private_key, const Key& peer_public, std::string_view label) {
  PkeyPtr own(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
  PkeyPtr peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public.data(), peer_public.size()));
  if (own == nullptr || peer == nullptr) return absl::InvalidArgumentError("not an X25519 key");
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new(own.get(), nullptr));
  uint8_t shared[32];
  size_t len = sizeof(shared);
  if (ctx == nullptr || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), shared, &len) != 1 || len != sizeof(shared)) {
    // X25519 refuses a peer key of small order (an all-zero shared secret).
    return absl::InvalidArgumentError("X25519 agreement failed (a malformed or low-order public key)");
  }
  KdfPtr kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  KdfCtxPtr kctx(kdf ? EVP_KDF_CTX_new(kdf.get()) : nullptr);
  if (kctx == nullptr) return OpenSslError("no HKDF");
  char digest[] = "SHA256";
  std::string info(label);
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, shared, sizeof(shared)),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end()};
  Key out{};
  const int ok = EVP_KDF_derive(kctx.get(), out.data(), out.size(), params);
  OPENSSL_cleanse(shared, sizeof(shared));
  if (ok != 1) return OpenSslError("HKDF failed");
  return out;
}

absl::Status ApplyMask(const Key& seed, bool subtract, std::span<uint32_t> values) {
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  const uint8_t iv[16] = {};
  if (ctx == nullptr || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_ctr(), nullptr, seed.data(), iv) != 1) {
    return OpenSslError("cannot start AES-256-CTR");
  }
  constexpr size_t kWords = 16384;
  static thread_local std::vector<uint8_t> zeros(kWords * 4, 0), stream(kWords * 4 + 16);
  for (size_t done = 0; done < values.size(); done += kWords) {
    const size_t n = std::min(kWords, values.size() - done);
    int len = 0;
    if (EVP_EncryptUpdate(ctx.get(), stream.data(), &len, zeros.data(), static_cast<int>(n * 4)) != 1 ||
        len != static_cast<int>(n * 4)) {
      return OpenSslError("AES-256-CTR failed");
    }
    uint32_t* v = values.data() + done;
    for (size_t i = 0; i < n; ++i) {
      uint32_t word;
      std::memcpy(&word, stream.data() + 4 * i, 4);  // little-endian hosts only (x86-64, aarch64)
      v[i] = subtract ? v[i] - word : v[i] + word;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Seal(const Key& key, std::string_view aad, std::string_view plaintext) {
  std::string out(12 + plaintext.size() + 16, '\0');
  auto* bytes = reinterpret_cast<uint8_t*>(out.data());
  if (RAND_bytes(bytes, 12) != 1) return OpenSslError("no random nonce");
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (ctx == nullptr || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), bytes) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const uint8_t*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), bytes + 12, &len, reinterpret_cast<const uint8_t*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), bytes + 12 + len, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, bytes + 12 + plaintext.size()) != 1) {
    return OpenSslError("AES-256-GCM encryption failed");
  }
  return out;
}

absl::StatusOr<std::string> Unseal(const Key& key, std::string_view aad, std::string_view sealed) {
  if (sealed.size() < 28) return absl::InvalidArgumentError("sealed share too short");
  const auto* bytes = reinterpret_cast<const uint8_t*>(sealed.data());
  const size_t n = sealed.size() - 28;
  std::string out(n, '\0');
  CipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  uint8_t tag[16];
  std::memcpy(tag, bytes + 12 + n, 16);
  if (ctx == nullptr || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), bytes) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const uint8_t*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<uint8_t*>(out.data()), &len, bytes + 12, static_cast<int>(n)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<uint8_t*>(out.data()) + len, &len) != 1) {
    return absl::InvalidArgumentError("a sealed share does not verify (wrong key, context or bytes)");
  }
  return out;
}

absl::StatusOr<std::vector<Share>> Split(std::span<const uint8_t> secret, int threshold, std::span<const uint8_t> xs) {
  if (threshold < 1 || static_cast<size_t>(threshold) > xs.size()) {
    return absl::InvalidArgumentError(absl::StrCat("Shamir: threshold ", threshold, " for ", xs.size(), " shares"));
  }
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i] == 0 || std::count(xs.begin(), xs.end(), xs[i]) > 1) {
      return absl::InvalidArgumentError("Shamir: share points must be distinct and non-zero");
    }
  }
  const Gf256& f = Field();
  std::vector<uint8_t> coefficients(secret.size() * static_cast<size_t>(threshold - 1));
  if (!coefficients.empty() && RAND_bytes(coefficients.data(), static_cast<int>(coefficients.size())) != 1) {
    return OpenSslError("no random bytes");
  }
  std::vector<Share> shares;
  for (uint8_t x : xs) {
    Share s{x, std::vector<uint8_t>(secret.size())};
    for (size_t b = 0; b < secret.size(); ++b) {
      // Horner from the highest coefficient down to the secret byte.
      uint8_t y = 0;
      for (int d = threshold - 2; d >= 0; --d) y = f.Mul(y, x) ^ coefficients[b * static_cast<size_t>(threshold - 1) + d];
      s.y[b] = f.Mul(y, x) ^ secret[b];
    }
    shares.push_back(std::move(s));
  }
  OPENSSL_cleanse(coefficients.data(), coefficients.size());
  return shares;
}

absl::StatusOr<std::vector<uint8_t>> Combine(std::span<const Share> shares, int threshold) {
  if (threshold < 1 || shares.size() < static_cast<size_t>(threshold)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Shamir: ", shares.size(), " shares, ", threshold, " needed to reconstruct"));
  }
  const std::span<const Share> use = shares.first(static_cast<size_t>(threshold));
  for (size_t i = 0; i < use.size(); ++i) {
    if (use[i].x == 0 || use[i].y.size() != use[0].y.size()) return absl::InvalidArgumentError("Shamir: malformed share");
    for (size_t j = 0; j < i; ++j) {
      if (use[j].x == use[i].x) return absl::InvalidArgumentError("Shamir: two shares at one point");
    }
  }
  const Gf256& f = Field();
  std::vector<uint8_t> secret(use[0].y.size(), 0);
  for (size_t i = 0; i < use.size(); ++i) {
    // Lagrange basis polynomial i at 0: prod x_j / (x_j - x_i); minus is xor.
    uint8_t basis = 1;
    for (size_t j = 0; j < use.size(); ++j) {
      if (j != i) basis = f.Mul(basis, f.Div(use[j].x, use[j].x ^ use[i].x));
    }
    for (size_t b = 0; b < secret.size(); ++b) secret[b] ^= f.Mul(basis, use[i].y[b]);
  }
  return secret;
}

absl::StatusOr<std::string> Sign(const std::string& key_pem, std::string_view message) {
  BioPtr bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (key == nullptr) return absl::InvalidArgumentError("not a PEM private key");
  const EVP_MD* md = EVP_PKEY_get_id(key.get()) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  MdCtxPtr ctx(EVP_MD_CTX_new());
  size_t len = 0;
  if (ctx == nullptr || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &len, reinterpret_cast<const uint8_t*>(message.data()), message.size()) != 1) {
    return OpenSslError("cannot sign");
  }
  std::string signature(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<uint8_t*>(signature.data()), &len,
                     reinterpret_cast<const uint8_t*>(message.data()), message.size()) != 1) {
    return OpenSslError("cannot sign");
  }
  signature.resize(len);
  return signature;
}

absl::Status VerifySigned(const std::string& ca_pem, const std::string& certificate_pem, const std::string& site_id,
                          std::string_view message, std::string_view signature) {
  BioPtr ca_bio(BIO_new_mem_buf(ca_pem.data(), static_cast<int>(ca_pem.size())));
  X509Ptr ca(ca_bio ? PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr) : nullptr);
  BioPtr cert_bio(BIO_new_mem_buf(certificate_pem.data(), static_cast<int>(certificate_pem.size())));
  X509Ptr cert(cert_bio ? PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (ca == nullptr || cert == nullptr) return absl::PermissionDeniedError("a relayed certificate is not PEM");
  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (store == nullptr || ctx == nullptr || X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert.get(), nullptr) != 1) {
    return OpenSslError("cannot set up certificate verification");
  }
  if (X509_verify_cert(ctx.get()) != 1) {
    return absl::PermissionDeniedError(
        absl::StrCat("the certificate relayed for ", site_id,
                     " is not issued by the federation's CA: ", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()))));
  }
  char cn[256] = {};
  if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert.get()), NID_commonName, cn, sizeof(cn)) < 0 ||
      site_id != cn) {
    return absl::PermissionDeniedError(absl::StrCat("the certificate relayed for ", site_id, " names ", cn));
  }
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  const EVP_MD* md = key != nullptr && EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  MdCtxPtr vctx(EVP_MD_CTX_new());
  if (key == nullptr || vctx == nullptr || EVP_DigestVerifyInit(vctx.get(), nullptr, md, nullptr, key) != 1 ||
      EVP_DigestVerify(vctx.get(), reinterpret_cast<const uint8_t*>(signature.data()), signature.size(),
                       reinterpret_cast<const uint8_t*>(message.data()), message.size()) != 1) {
    return absl::PermissionDeniedError(absl::StrCat("the keys relayed for ", site_id, " are not signed by its certificate"));
  }
  return absl::OkStatus();
}

}  // namespace fedtune::secagg
