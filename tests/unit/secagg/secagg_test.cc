// Secure aggregation: the primitives, the fixed-point encoding and whole
// rounds between site sessions and a coordinator session, in one process,
// with the federation's real certificates (certs/fedtune-certs).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include <unistd.h>

#include "common/core/file_io.h"
#include "common/core/status.h"
#include "common/secagg/crypto.h"
#include "common/secagg/protocol.h"
#include "tests/testing/run_command.h"

namespace fedtune::secagg {
namespace {

namespace fs = std::filesystem;

TEST(Shamir, AnyThresholdSharesGiveTheSecretBackAndFewerAreRefused) {
  std::vector<uint8_t> secret(32);
  for (size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<uint8_t>(i * 37 + 11);
  const std::vector<uint8_t> xs = {1, 2, 3, 4, 5, 6, 7};
  auto shares = Split(secret, 4, xs);
  ASSERT_TRUE(shares.ok()) << shares.status();
  // Every 4-subset of the 7 shares.
  int subsets = 0;
  for (int mask = 0; mask < 128; ++mask) {
    if (__builtin_popcount(mask) != 4) continue;
    std::vector<Share> pick;
    for (int i = 0; i < 7; ++i) {
      if (mask & (1 << i)) pick.push_back((*shares)[i]);
    }
    auto back = Combine(pick, 4);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, secret);
    ++subsets;
  }
  EXPECT_EQ(subsets, 35);
  EXPECT_FALSE(Combine(std::span<const Share>(shares->data(), 3), 4).ok());
  // Three shares and a forged fourth give something else.
  std::vector<Share> forged(shares->begin(), shares->begin() + 4);
  forged[3].y[0] ^= 1;
  EXPECT_NE(*Combine(forged, 4), secret);
  EXPECT_FALSE(Split(secret, 2, std::vector<uint8_t>{1, 1}).ok()) << "distinct points";
  EXPECT_FALSE(Split(secret, 2, std::vector<uint8_t>{0, 1}).ok()) << "0 is the secret's point";
}

TEST(SecaggCrypto, AgreementIsSymmetricAndLabelsSeparateKeys) {
  auto a = GenerateKeyPair(), b = GenerateKeyPair();
  ASSERT_TRUE(a.ok() && b.ok());
  auto ab = Agree(a->private_key, b->public_key, "x"), ba = Agree(b->private_key, a->public_key, "x");
  ASSERT_TRUE(ab.ok() && ba.ok());
  EXPECT_EQ(*ab, *ba);
  EXPECT_NE(*Agree(a->private_key, b->public_key, "y"), *ab);
  EXPECT_EQ(*PublicKeyOf(a->private_key), a->public_key);
  Key zero{};
  EXPECT_FALSE(Agree(a->private_key, zero, "x").ok()) << "a low-order public key";
}

TEST(SecaggCrypto, SealedSharesOpenOnlyWithTheirKeyAndContext) {
  auto key = RandomKey();
  ASSERT_TRUE(key.ok());
  auto sealed = Seal(*key, "job|1|a|b", "the share");
  ASSERT_TRUE(sealed.ok());
  EXPECT_EQ(*Unseal(*key, "job|1|a|b", *sealed), "the share");
  EXPECT_FALSE(Unseal(*key, "job|1|a|c", *sealed).ok()) << "relayed to another site";
  std::string tampered = *sealed;
  tampered[14] ^= 1;
  EXPECT_FALSE(Unseal(*key, "job|1|a|b", tampered).ok());
  EXPECT_FALSE(Unseal(*RandomKey(), "job|1|a|b", *sealed).ok());
}

// Chi-square of the byte values of `words` against the uniform law (255
// degrees of freedom: mean 255, standard deviation 22.6).
double ChiSquareOfBytes(const std::vector<uint32_t>& words) {
  std::vector<double> counts(256, 0);
  for (uint32_t w : words) {
    for (int b = 0; b < 4; ++b) counts[(w >> (8 * b)) & 0xff] += 1;
  }
  const double expected = 4.0 * words.size() / 256;
  double chi = 0;
  for (double c : counts) chi += (c - expected) * (c - expected) / expected;
  return chi;
}

TEST(SecaggCrypto, MasksCancelExactlyAndLookUniform) {
  auto seed = RandomKey();
  std::vector<uint32_t> v(1 << 16, 0);
  ASSERT_TRUE(ApplyMask(*seed, false, v).ok());
  // p = 0.001 above 337 for 255 degrees of freedom.
  EXPECT_LT(ChiSquareOfBytes(v), 337.0);
  ASSERT_TRUE(ApplyMask(*seed, true, v).ok());
  EXPECT_TRUE(std::all_of(v.begin(), v.end(), [](uint32_t w) { return w == 0; }));
  EXPECT_GT(ChiSquareOfBytes(v), 1e5) << "the test can tell a constant vector";
}

TEST(SecaggEncoding, AWeightedSumDecodesWithinTheQuantisationBound) {
  std::mt19937 rng(3);
  std::normal_distribution<float> noise(0, 0.05f);
  const int sites = 7;
  const double bound = 4.0;
  std::vector<double> weights = {0.3, 0.1, 0.05, 0.2, 0.15, 0.1, 0.1};
  std::vector<uint32_t> sum(1000, 0);
  std::vector<double> expected(1000, 0);
  for (int s = 0; s < sites; ++s) {
    std::vector<float> x(1000);
    for (float& v : x) v = noise(rng);
    x[0] = s % 2 ? 3.9f : -3.9f;
    const std::vector<uint32_t> e = Encode(x, weights[s], bound);
    for (size_t i = 0; i < x.size(); ++i) {
      sum[i] += e[i];
      expected[i] += weights[s] * x[i];
    }
  }
  const std::vector<double> got = Decode(sum, bound);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - expected[i]));
  EXPECT_LE(worst, QuantizationError(sites, bound));
  EXPECT_LT(QuantizationError(sites, bound), 1e-7);
  int64_t clipped = 0;
  const std::vector<float> wild = {5.0f, -9.0f, 1.0f, NAN};
  const std::vector<double> back = Decode(Encode(wild, 1.0, bound, &clipped), bound);
  EXPECT_EQ(clipped, 3);
  EXPECT_NEAR(back[0], 4.0, 1e-8);
  EXPECT_NEAR(back[1], -4.0, 1e-8);
  EXPECT_NEAR(back[3], -4.0, 1e-8);
}

TEST(SecaggGraph, NeighbourhoodsAreSymmetricRegularAndTheSameEverywhere) {
  for (int n : {3, 10, 11, 50, 200}) {
    std::vector<std::string> sites;
    for (int i = 0; i < n; ++i) sites.push_back("site-" + std::to_string(i));
    const int degree = DefaultDegree(n);
    const auto g = Neighbourhoods(sites, degree, 42);
    std::vector<std::string> reversed(sites.rbegin(), sites.rend());
    EXPECT_EQ(g, Neighbourhoods(reversed, degree, 42)) << "order of the roster does not matter";
    for (const auto& [s, nb] : g) {
      EXPECT_EQ(static_cast<int>(nb.size()), degree) << n;
      for (const std::string& v : nb) {
        EXPECT_NE(v, s);
        const auto& back = g.at(v);
        EXPECT_TRUE(std::find(back.begin(), back.end(), s) != back.end());
      }
    }
    if (n >= 50) {
      EXPECT_LT(degree, n - 1) << "sparse for large federations";
    }
  }
  EXPECT_EQ(DefaultDegree(50), 14);
  EXPECT_EQ(DefaultThreshold(14), 8);
}

// The federation's certificates for `sites`, made once per test binary.
struct Federation {
  std::string dir;
  std::string ca_pem;
  std::map<std::string, std::string> cert, key;
};

const Federation& Pki(int sites) {
  static std::map<int, Federation> made;
  if (made.count(sites)) return made[sites];
  Federation f;
  // One folder per process: ctest runs this binary's tests side by side.
  f.dir = ::testing::TempDir() + "/secagg_pki_" + std::to_string(getpid()) + "_" + std::to_string(sites);
  fs::remove_all(f.dir);
  fs::create_directories(f.dir);
  const std::string certs = std::string(FEDTUNE_SOURCE_DIR) + "/certs/fedtune-certs";
  std::string script = certs + " init-ca pki";
  for (int i = 0; i < sites; ++i) script += " && " + certs + " site pki site-" + std::to_string(i);
  std::string out;
  EXPECT_EQ(testing::RunCommand("cd " + f.dir + " && (" + script + ") >/dev/null 2>&1", &out), 0) << out;
  f.ca_pem = *ReadFileBytes(f.dir + "/pki/ca.pem");
  for (int i = 0; i < sites; ++i) {
    const std::string id = "site-" + std::to_string(i);
    f.cert[id] = *ReadFileBytes(f.dir + "/pki/site/" + id + ".pem");
    f.key[id] = *ReadFileBytes(f.dir + "/pki/site/" + id + ".key");
  }
  return made[sites] = f;
}

Verifier VerifierOf(const Federation& f) {
  return [&f](const std::string& site, const std::string& cert, std::string_view message, std::string_view signature) {
    return VerifySigned(f.ca_pem, cert, site, message, signature);
  };
}

struct Round {
  Params params;
  std::map<std::string, std::unique_ptr<SiteSession>> sites;
  std::unique_ptr<ServerSession> server;
  std::map<std::string, std::vector<float>> inputs;
  std::map<std::string, double> weights;
};

// Starts a round of `n` sites with random inputs (vectors of `length`).
Round StartRound(const Federation& f, int n, int64_t length, uint64_t seed) {
  Round r;
  r.params.job_id = "job-1";
  r.params.round = 3;
  r.params.length = length;
  r.params.graph_seed = seed;
  r.server = std::make_unique<ServerSession>(r.params);
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> noise(0, 0.01f);
  for (int i = 0; i < n; ++i) {
    const std::string id = "site-" + std::to_string(i);
    const std::string key = f.key.at(id);
    auto s = SiteSession::Start(id, r.params, f.cert.at(id), [key](std::string_view m) { return Sign(key, m); });
    EXPECT_TRUE(s.ok()) << s.status();
    r.sites[id] = std::move(*s);
    std::vector<float> x(static_cast<size_t>(length));
    for (float& v : x) v = noise(rng);
    r.inputs[id] = x;
    r.weights[id] = 1.0 / n;
  }
  return r;
}

// Runs the stages; sites in `drop_before_masking` share their keys and then
// vanish. Returns the decoded sum.
absl::StatusOr<std::vector<double>> RunRound(Round& r, const Federation& f, const std::set<std::string>& drop_before_masking,
                                        double bound = 1.0) {
  for (auto& [id, s] : r.sites) RETURN_IF_ERROR(r.server->AddAdvertisement(s->advertisement()));
  const std::vector<Advertisement> roster = r.server->CloseAdvertising();
  for (auto& [id, s] : r.sites) {
    ASSIGN_OR_RETURN(std::vector<SealedShares> shares, s->ShareKeys(roster, VerifierOf(f)));
    RETURN_IF_ERROR(r.server->AddShares(id, std::move(shares)));
  }
  const std::vector<std::string> shared = r.server->CloseSharing();
  for (auto& [id, s] : r.sites) {
    if (drop_before_masking.count(id)) continue;
    ASSIGN_OR_RETURN(std::vector<uint32_t> y,
                     s->Mask(r.server->SharesFor(id), shared, Encode(r.inputs[id], r.weights[id], bound)));
    RETURN_IF_ERROR(r.server->AddMasked(id, y));
  }
  const std::vector<std::string> masked = r.server->CloseMasking();
  for (const std::string& id : masked) {
    ASSIGN_OR_RETURN(Reveal reveal, r.sites[id]->Unmask(masked));
    RETURN_IF_ERROR(r.server->AddReveal(reveal));
  }
  ASSIGN_OR_RETURN(std::vector<uint32_t> sum, r.server->Unmasked());
  return Decode(sum, bound);
}

void ExpectWeightedSum(const Round& r, const std::vector<double>& got, const std::set<std::string>& dropped, double bound) {
  const int n = static_cast<int>(r.sites.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    double expected = 0;
    for (const auto& [id, x] : r.inputs) {
      if (!dropped.count(id)) expected += r.weights.at(id) * x[i];
    }
    worst = std::max(worst, std::abs(got[i] - expected));
  }
  EXPECT_LE(worst, QuantizationError(n, bound)) << n << " sites";
}

TEST(SecureAggregation, TheUnmaskedSumIsWeightedFedAvgWithinTheQuantisationBound) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl (Debian package openssl) is needed";
  for (int n : {3, 10, 50}) {
    const Federation& f = Pki(n);
    Round r = StartRound(f, n, 2000, 100 + n);
    auto sum = RunRound(r, f, {});
    ASSERT_TRUE(sum.ok()) << sum.status();
    ExpectWeightedSum(r, *sum, {}, 1.0);
    if (n == 50) {
      EXPECT_EQ(r.server->neighbourhoods().at("site-0").size(), 14u) << "SecAgg+: sparse";
    }
  }
}

TEST(SecureAggregation, SitesDroppingAfterSharingAreRecovered) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl (Debian package openssl) is needed";
  const Federation& f = Pki(10);
  Round r = StartRound(f, 10, 500, 7);
  const std::set<std::string> dropped = {"site-3", "site-8"};
  auto sum = RunRound(r, f, dropped);
  ASSERT_TRUE(sum.ok()) << sum.status();
  ExpectWeightedSum(r, *sum, dropped, 1.0);

  // Three sites of three, one dropping: still a majority of holders.
  const Federation& f3 = Pki(3);
  Round small = StartRound(f3, 3, 100, 9);
  auto sum3 = RunRound(small, f3, {"site-1"});
  ASSERT_TRUE(sum3.ok()) << sum3.status();
  ExpectWeightedSum(small, *sum3, {"site-1"}, 1.0);
}

// A share that does not open (a hostile sender, or bytes changed on the
// way) costs its receiver nothing: the round completes without it.
TEST(SecureAggregation, AShareThatDoesNotOpenIsLeftOutAndTheRoundCompletes) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl (Debian package openssl) is needed";
  const Federation& f = Pki(10);
  Round r = StartRound(f, 10, 200, 41);
  for (auto& [id, s] : r.sites) ASSERT_TRUE(r.server->AddAdvertisement(s->advertisement()).ok());
  const auto roster = r.server->CloseAdvertising();
  for (auto& [id, s] : r.sites) {
    auto shares = s->ShareKeys(roster, VerifierOf(f));
    ASSERT_TRUE(shares.ok()) << shares.status();
    if (id == "site-3") {
      for (auto& x : *shares) {
        if (x.to == "site-0") x.sealed[20] ^= 1;  // garbled for site-0
      }
    }
    ASSERT_TRUE(r.server->AddShares(id, std::move(*shares)).ok());
  }
  const auto shared = r.server->CloseSharing();
  for (auto& [id, s] : r.sites) {
    auto y = s->Mask(r.server->SharesFor(id), shared, Encode(r.inputs[id], r.weights[id], 1.0));
    ASSERT_TRUE(y.ok()) << id << ": " << y.status();
    ASSERT_TRUE(r.server->AddMasked(id, *y).ok());
  }
  const auto masked = r.server->CloseMasking();
  for (const auto& id : masked) {
    auto reveal = r.sites[id]->Unmask(masked);
    ASSERT_TRUE(reveal.ok()) << reveal.status();
    if (id == "site-0") {
      EXPECT_EQ(reveal->seed_shares.count("site-3"), 0u) << "it holds none of site-3's";
    }
    ASSERT_TRUE(r.server->AddReveal(*reveal).ok());
  }
  auto sum = r.server->Unmasked();
  ASSERT_TRUE(sum.ok()) << sum.status();
  ExpectWeightedSum(r, Decode(*sum, 1.0), {}, 1.0);
}

TEST(SecureAggregation, TooFewSurvivorsStopTheRoundWithoutRevealingAnything) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl (Debian package openssl) is needed";
  const Federation& f = Pki(3);
  Round r = StartRound(f, 3, 100, 11);
  auto sum = RunRound(r, f, {"site-1", "site-2"});
  ASSERT_FALSE(sum.ok());
  EXPECT_EQ(sum.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(sum.status().message().find("needed"), std::string::npos) << sum.status();
}

TEST(SecureAggregation, TheCoordinatorHoldsOnlyUniformLookingVectors) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl (Debian package openssl) is needed";
  const Federation& f = Pki(3);
  Round r = StartRound(f, 3, 1 << 15, 13);
  for (auto& [id, x] : r.inputs) std::fill(x.begin(), x.end(), 0.0f);  // the least random input there is
  for (auto& [id, s] : r.sites) ASSERT_TRUE(r.server->AddAdvertisement(s->advertisement()).ok());
  const auto roster = r.server->CloseAdvertising();
  for (auto& [id, s] : r.sites) ASSERT_TRUE(r.server->AddShares(id, *s->ShareKeys(roster, VerifierOf(f))).ok());
  const auto shared = r.server->CloseSharing();
  auto y = r.sites["site-0"]->Mask(r.server->SharesFor("site-0"), shared, Encode(r.inputs["site-0"], 1.0 / 3, 1.0));
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_LT(ChiSquareOfBytes(*y), 337.0) << "what the coordinator receives from one site";
}

TEST(SecureAggregation, KeysTheSitesDidNotSignAreRefused) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl (Debian package openssl) is needed";
  const Federation& f = Pki(3);
  {
    // The relay swaps in a key of its own for site-2.
    Round r = StartRound(f, 3, 10, 17);
    for (auto& [id, s] : r.sites) ASSERT_TRUE(r.server->AddAdvertisement(s->advertisement()).ok());
    std::vector<Advertisement> roster = r.server->CloseAdvertising();
    roster[2].mask_public = GenerateKeyPair()->public_key;
    auto shares = r.sites["site-0"]->ShareKeys(roster, VerifierOf(f));
    ASSERT_FALSE(shares.ok());
    EXPECT_EQ(shares.status().code(), absl::StatusCode::kPermissionDenied);
    EXPECT_NE(shares.status().message().find("site-2"), std::string::npos) << shares.status();
  }
  {
    // Keys signed by site-1's certificate, relayed as site-2's.
    Round r = StartRound(f, 3, 10, 19);
    std::vector<Advertisement> roster;
    for (auto& [id, s] : r.sites) roster.push_back(s->advertisement());
    roster[2].certificate_pem = f.cert.at("site-1");
    auto shares = r.sites["site-0"]->ShareKeys(roster, VerifierOf(f));
    ASSERT_FALSE(shares.ok());
    EXPECT_NE(shares.status().message().find("names site-1"), std::string::npos) << shares.status();
  }
  {
    // Keys signed for another attempt of the round (another graph seed)
    // cannot be replayed in this one.
    Round r = StartRound(f, 3, 10, 31);
    Round earlier = StartRound(f, 3, 10, 37);
    std::vector<Advertisement> roster;
    for (auto& [id, s] : r.sites) roster.push_back(s->advertisement());
    roster[1] = earlier.sites["site-1"]->advertisement();
    auto shares = r.sites["site-0"]->ShareKeys(roster, VerifierOf(f));
    ASSERT_FALSE(shares.ok());
    EXPECT_EQ(shares.status().code(), absl::StatusCode::kPermissionDenied) << shares.status();
  }
  {
    // A certificate from another CA.
    const Federation& other = Pki(4);
    Round r = StartRound(f, 3, 10, 23);
    std::vector<Advertisement> roster;
    for (auto& [id, s] : r.sites) roster.push_back(s->advertisement());
    roster[1].certificate_pem = other.cert.at("site-1");
    auto shares = r.sites["site-0"]->ShareKeys(roster, VerifierOf(f));
    ASSERT_FALSE(shares.ok());
    EXPECT_NE(shares.status().message().find("not issued by the federation's CA"), std::string::npos) << shares.status();
  }
}

TEST(SecureAggregation, ASiteRevealsOnceAndNeverBothSecretsOfAPeer) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "openssl (Debian package openssl) is needed";
  const Federation& f = Pki(10);
  Round r = StartRound(f, 10, 10, 29);
  for (auto& [id, s] : r.sites) ASSERT_TRUE(r.server->AddAdvertisement(s->advertisement()).ok());
  const auto roster = r.server->CloseAdvertising();
  for (auto& [id, s] : r.sites) ASSERT_TRUE(r.server->AddShares(id, *s->ShareKeys(roster, VerifierOf(f))).ok());
  const auto shared = r.server->CloseSharing();
  for (auto& [id, s] : r.sites) {
    ASSERT_TRUE(r.server->AddMasked(id, *s->Mask(r.server->SharesFor(id), shared, Encode(r.inputs[id], 0.1, 1.0))).ok());
  }
  std::vector<std::string> all = r.server->CloseMasking();
  SiteSession& s0 = *r.sites["site-0"];
  auto first = s0.Unmask(all);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->seed_shares.size(), 10u);
  EXPECT_TRUE(first->key_shares.empty());
  // A coordinator that now claims site-5 dropped gets nothing more.
  std::vector<std::string> fewer = all;
  fewer.erase(std::find(fewer.begin(), fewer.end(), "site-5"));
  auto second = s0.Unmask(fewer);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  // The coordinator's side refuses a key share of a site whose vector it holds.
  Reveal forged = *first;
  forged.from = "site-1";
  forged.key_shares["site-5"] = forged.seed_shares["site-5"];
  EXPECT_FALSE(r.server->AddReveal(forged).ok());
  // Shares the sender does not hold (site-0's points, sent as site-1's)
  // could corrupt the sum: refused.
  Reveal borrowed = *first;
  borrowed.from = "site-1";
  auto refused = r.server->AddReveal(borrowed);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("does not hold"), std::string::npos) << refused;
  // A masked vector after the stage closed is refused (its site's key may be revealed).
  EXPECT_FALSE(r.server->AddMasked("site-1", std::vector<uint32_t>(10, 0)).ok());
}

}  // namespace
}  // namespace fedtune::secagg
