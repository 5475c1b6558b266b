#include "common/core/hashing.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "absl/strings/str_cat.h"

namespace fedtune {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// OpenSSL only fails here on allocation failure or a broken library; there is
// nothing a caller could do, so it is treated like std::bad_alloc.
void CheckOpenSsl(int ok, const char* what) {
  if (ok != 1) throw std::runtime_error(std::string("OpenSSL failure in ") + what);
}

}  // namespace

std::string ToHex(std::span<const uint8_t> bytes) {
  std::string out(bytes.size() * 2, '0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kHexDigits[bytes[i] >> 4];
    out[2 * i + 1] = kHexDigits[bytes[i] & 0xF];
  }
  return out;
}

uint64_t DigestPrefix64(const Digest& d) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = v << 8 | d[i];
  return v;
}

absl::StatusOr<Digest> DigestFromHex(std::string_view hex) {
  Digest d{};
  if (hex.size() != 2 * d.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("a SHA-256 digest is 64 hex characters, got ", hex.size()));
  }
  for (size_t i = 0; i < d.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return absl::InvalidArgumentError("a SHA-256 digest must contain only hex characters");
    }
    d[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return d;
}

struct Sha256Hasher::Ctx {
  EVP_MD_CTX* md = nullptr;
};

Sha256Hasher::Sha256Hasher() : ctx_(std::make_unique<Ctx>()) {
  ctx_->md = EVP_MD_CTX_new();
  if (ctx_->md == nullptr) throw std::bad_alloc();
  CheckOpenSsl(EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr), "EVP_DigestInit_ex");
}

Sha256Hasher::~Sha256Hasher() { EVP_MD_CTX_free(ctx_->md); }

void Sha256Hasher::Update(std::span<const std::byte> data) {
  if (data.empty()) return;
  CheckOpenSsl(EVP_DigestUpdate(ctx_->md, data.data(), data.size()), "EVP_DigestUpdate");
}

void Sha256Hasher::Update(std::string_view data) {
  Update(std::as_bytes(std::span(data.data(), data.size())));
}

Digest Sha256Hasher::Finish() {
  Digest d{};
  unsigned int len = 0;
  CheckOpenSsl(EVP_DigestFinal_ex(ctx_->md, d.data(), &len), "EVP_DigestFinal_ex");
  return d;
}

std::string Sha256Hasher::FinishHex() { return ToHex(Finish()); }

Digest Sha256(std::span<const std::byte> data) {
  Sha256Hasher h;
  h.Update(data);
  return h.Finish();
}

Digest Sha256(std::string_view data) {
  return Sha256(std::as_bytes(std::span(data.data(), data.size())));
}

std::string Sha256Hex(std::string_view data) { return ToHex(Sha256(data)); }

absl::StatusOr<std::string> Sha256FileHex(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    int err = errno;
    auto msg = absl::StrCat("cannot open ", path, ": ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  Sha256Hasher h;
  std::vector<std::byte> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) {
    h.Update(std::span(buf.data(), n));
  }
  bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::DataLossError(absl::StrCat("read error on ", path));
  return h.FinishHex();
}

Digest HmacSha256(std::span<const uint8_t> key, std::string_view data) {
  Digest d{};
  unsigned int len = 0;
  // HMAC() with an empty key needs a non-null pointer.
  static const uint8_t kEmpty = 0;
  const uint8_t* k = key.empty() ? &kEmpty : key.data();
  if (HMAC(EVP_sha256(), k, static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), d.data(),
           &len) == nullptr) {
    throw std::runtime_error("OpenSSL failure in HMAC");
  }
  return d;
}

absl::StatusOr<std::vector<uint8_t>> SecureRandomBytes(size_t n) {
  std::vector<uint8_t> out(n);
  if (n > 0 && RAND_bytes(out.data(), static_cast<int>(n)) != 1) {
    return absl::InternalError("the system random number generator is not available");
  }
  return out;
}

bool ConstantTimeEquals(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace fedtune
