#include "common/core/hashing.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace fedtune {
namespace {

std::vector<uint8_t> Bytes(size_t n, uint8_t v) { return std::vector<uint8_t>(n, v); }
std::string Str(size_t n, char c) { return std::string(n, c); }

// FIPS 180-2 Appendix B test vectors.
TEST(Sha256, Fips180Vectors) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Sha256Hex(Str(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256, IncrementalEqualsOneShotForAnySplit) {
  const std::string msg = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  for (size_t cut = 0; cut <= msg.size(); ++cut) {
    Sha256Hasher h;
    h.Update(std::string_view(msg).substr(0, cut));
    h.Update(std::string_view(msg).substr(cut));
    EXPECT_EQ(h.FinishHex(), Sha256Hex(msg)) << "cut at " << cut;
  }
}

TEST(Sha256, DigestHexRoundTrip) {
  const std::string hex = Sha256Hex("abc");
  auto d = DigestFromHex(hex);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(ToHex(*d), hex);
  EXPECT_EQ(*DigestFromHex("BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"), *d);
  EXPECT_FALSE(DigestFromHex("abc").ok());
  EXPECT_FALSE(DigestFromHex(std::string(63, 'a') + "g").ok());
}

TEST(Sha256, FileMatchesInMemory) {
  const std::string path = ::testing::TempDir() + "/sha_file.bin";
  std::string content = Str(3 << 20, 'x') + "tail";
  FILE* f = fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  fwrite(content.data(), 1, content.size(), f);
  fclose(f);
  EXPECT_EQ(*Sha256FileHex(path), Sha256Hex(content));
  EXPECT_EQ(Sha256FileHex(path + ".missing").status().code(), absl::StatusCode::kNotFound);
}

struct HmacVector {
  std::vector<uint8_t> key;
  std::string data;
  std::string hex;
};

// RFC 4231 section 4 test cases 1, 2, 3, 4, 6 and 7 (case 5 is below).
TEST(HmacSha256, Rfc4231Vectors) {
  std::vector<uint8_t> key4;
  for (uint8_t i = 1; i <= 25; ++i) key4.push_back(i);
  const std::vector<HmacVector> cases = {
      {Bytes(20, 0x0b), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {{'J', 'e', 'f', 'e'}, "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {Bytes(20, 0xaa), Str(50, '\xdd'),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {key4, Str(50, '\xcd'),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {Bytes(131, 0xaa), "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {Bytes(131, 0xaa),
       "This is a test using a larger than block-size key and a larger than block-size data. "
       "The key needs to be hashed before being used by the HMAC algorithm.",
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(ToHex(HmacSha256(cases[i].key, cases[i].data)), cases[i].hex) << "case " << i;
  }
}

// RFC 4231 test case 5: output truncated to 128 bits.
TEST(HmacSha256, Rfc4231TruncatedVector) {
  const std::string full = ToHex(HmacSha256(Bytes(20, 0x0c), "Test With Truncation"));
  EXPECT_EQ(full.substr(0, 32), "a3b6167473100ee06e0c796c2955552b");
}

TEST(HmacSha256, DifferentKeysGiveUnlinkableOutputs) {
  const auto a = HmacSha256(Bytes(32, 1), "PATIENT-123");
  const auto b = HmacSha256(Bytes(32, 2), "PATIENT-123");
  EXPECT_NE(a, b);
  EXPECT_EQ(a, HmacSha256(Bytes(32, 1), "PATIENT-123"));
  EXPECT_NE(ToHex(HmacSha256({}, "x")), "");  // an empty key is allowed
}

TEST(ConstantTimeEquals, ComparesContentAndLength) {
  const auto a = Sha256("a");
  auto b = a;
  EXPECT_TRUE(ConstantTimeEquals(a, b));
  b[31] ^= 1;
  EXPECT_FALSE(ConstantTimeEquals(a, b));
  EXPECT_FALSE(ConstantTimeEquals(std::span(a).first(31), b));
}

}  // namespace
}  // namespace fedtune
