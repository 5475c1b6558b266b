// Secure aggregation's cost in a round, against plain FedAvg: N sites and a
// coordinator run the four stages (common/secagg) in one process, one after
// another on one thread, so each party's CPU time is measured alone, on
// vectors the size of round_overhead's model (ViT-B/16 LoRA r=16 + head:
// 616 k values). Reference, same run: the coordinator's plain FedAvg
// arithmetic on the same N vectors (weighted float sum), and each site's
// update as float32 bytes.
//
//   secagg_overhead [--sites 3,10,50] [--length 616000] [--drop 1] [--work DIR]
//
// Certificates come from certs/fedtune-certs (openssl), made before timing.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "common/secagg/crypto.h"
#include "common/secagg/protocol.h"
#include "tests/testing/run_command.h"

namespace sa = fedtune::secagg;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Figures {
  double site_seconds = 0;         // mean per site, all stages
  double coordinator_seconds = 0;  // all stages, unmasking included
  double reference_seconds = 0;    // plain FedAvg sum on the coordinator
  double key_bytes_per_site = 0;   // advertisement + sealed shares sent
  int degree = 0;
  int threshold = 0;
  double max_error = 0;  // decoded sum vs plain sum
  bool ok = false;
};

Figures Measure(int n, int64_t length, int drop, const std::string& dir) {
  Figures f;
  const std::string certs = std::string(FEDTUNE_SOURCE_DIR) + "/certs/fedtune-certs";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string script = certs + " init-ca pki";
  for (int i = 0; i < n; ++i) script += " && " + certs + " site pki site-" + std::to_string(i);
  std::string out;
  if (fedtune::testing::RunCommand("cd " + dir + " && (" + script + ") >/dev/null 2>&1", &out) != 0) {
    std::cerr << "fedtune-certs failed (is openssl installed?)\n";
    return f;
  }
  const std::string ca = *fedtune::ReadFileBytes(dir + "/pki/ca.pem");
  std::vector<std::string> ids;
  std::map<std::string, std::string> cert, key;
  for (int i = 0; i < n; ++i) {
    ids.push_back("site-" + std::to_string(i));
    cert[ids.back()] = *fedtune::ReadFileBytes(dir + "/pki/site/" + ids.back() + ".pem");
    key[ids.back()] = *fedtune::ReadFileBytes(dir + "/pki/site/" + ids.back() + ".key");
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> noise(0, 0.01f);
  std::map<std::string, std::vector<float>> x;
  for (const auto& id : ids) {
    x[id].resize(static_cast<size_t>(length));
    for (float& v : x[id]) v = noise(rng);
  }
  const double weight = 1.0 / n, bound = 1.0;
  std::set<std::string> dropped;
  for (int i = 0; i < drop && i < n; ++i) dropped.insert(ids[static_cast<size_t>(n - 1 - i)]);

  // Reference: what plain FedAvg's coordinator computes.
  auto t0 = Clock::now();
  std::vector<double> plain(static_cast<size_t>(length), 0.0);
  for (const auto& id : ids) {
    if (dropped.count(id)) continue;
    const std::vector<float>& v = x[id];
    for (size_t i = 0; i < plain.size(); ++i) plain[i] += weight * v[i];
  }
  f.reference_seconds = Since(t0);

  sa::Params p;
  p.job_id = "bench";
  p.round = 1;
  p.length = length;
  p.graph_seed = 5;
  std::map<std::string, double> site_time;
  double coordinator = 0;
  auto verify = [&ca](const std::string& site, const std::string& c, std::string_view m, std::string_view s) {
    return sa::VerifySigned(ca, c, site, m, s);
  };
  std::map<std::string, std::unique_ptr<sa::SiteSession>> sites;
  sa::ServerSession server(p);
  for (const auto& id : ids) {
    t0 = Clock::now();
    const std::string k = key[id];
    auto s = sa::SiteSession::Start(id, p, cert[id], [k](std::string_view m) { return sa::Sign(k, m); });
    site_time[id] += Since(t0);
    if (!s.ok()) return f;
    f.key_bytes_per_site += 64 + (*s)->advertisement().signature.size();
    t0 = Clock::now();
    if (!server.AddAdvertisement((*s)->advertisement()).ok()) return f;
    coordinator += Since(t0);
    sites[id] = std::move(*s);
  }
  t0 = Clock::now();
  const auto roster = server.CloseAdvertising();
  coordinator += Since(t0);
  for (const auto& id : ids) {
    t0 = Clock::now();
    auto shares = sites[id]->ShareKeys(roster, verify);
    site_time[id] += Since(t0);
    if (!shares.ok()) {
      std::cerr << shares.status() << "\n";
      return f;
    }
    for (const auto& s : *shares) f.key_bytes_per_site += s.sealed.size();
    t0 = Clock::now();
    if (!server.AddShares(id, std::move(*shares)).ok()) return f;
    coordinator += Since(t0);
  }
  t0 = Clock::now();
  const auto shared = server.CloseSharing();
  coordinator += Since(t0);
  for (const auto& id : ids) {
    if (dropped.count(id)) continue;
    t0 = Clock::now();
    auto y = sites[id]->Mask(server.SharesFor(id), shared, sa::Encode(x[id], weight, bound));
    site_time[id] += Since(t0);
    if (!y.ok()) return f;
    t0 = Clock::now();
    if (!server.AddMasked(id, *y).ok()) return f;
    coordinator += Since(t0);
  }
  t0 = Clock::now();
  const auto masked = server.CloseMasking();
  coordinator += Since(t0);
  for (const auto& id : masked) {
    t0 = Clock::now();
    auto r = sites[id]->Unmask(masked);
    site_time[id] += Since(t0);
    if (!r.ok()) return f;
    t0 = Clock::now();
    if (!server.AddReveal(*r).ok()) return f;
    coordinator += Since(t0);
  }
  t0 = Clock::now();
  auto sum = server.Unmasked();
  coordinator += Since(t0);
  if (!sum.ok()) {
    std::cerr << sum.status() << "\n";
    return f;
  }
  const std::vector<double> got = sa::Decode(*sum, bound);
  for (size_t i = 0; i < got.size(); ++i) f.max_error = std::max(f.max_error, std::abs(got[i] - plain[i]));
  double total = 0;
  for (const auto& [id, t] : site_time) total += t;
  f.site_seconds = total / n;
  f.key_bytes_per_site /= n;
  f.coordinator_seconds = coordinator;
  f.degree = static_cast<int>(server.neighbourhoods().at(ids[0]).size());
  f.threshold = server.threshold();
  f.ok = f.max_error <= sa::QuantizationError(n, bound);
  fs::remove_all(dir);
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  std::string sites_arg = "3,10,50", work = "/tmp/fedtune_secagg_bench";
  int64_t length = 616000;
  int drop = 1;
  for (int i = 1; i + 1 < argc || (i < argc && std::string(argv[i]) == "--help"); i += 2) {
    const std::string k = argv[i];
    if (k == "--sites") sites_arg = argv[i + 1];
    else if (k == "--length") length = std::atoll(argv[i + 1]);
    else if (k == "--drop") drop = std::atoi(argv[i + 1]);
    else if (k == "--work") work = argv[i + 1];
    else {
      std::cerr << "usage: secagg_overhead [--sites 3,10,50] [--length 616000] [--drop 1] [--work DIR]\n";
      return k == "--help" ? 0 : 2;
    }
  }
  std::printf("| sites | dropped | neighbours / threshold | site s (mean, all stages) | coordinator s | plain FedAvg sum s | "
              "keys + shares sent per site, kB | max error / bound |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (absl::string_view s : absl::StrSplit(sites_arg, ',')) {
    const int n = std::atoi(std::string(s).c_str());
    for (int d : {0, drop}) {
      const Figures f = Measure(n, length, d, work + "/" + std::to_string(n));
      if (!f.ok) {
        std::cerr << "round with " << n << " sites failed\n";
        return 1;
      }
      std::printf("| %d | %d | %d / %d | %.3f | %.3f | %.4f | %.1f | %.2g / %.2g |\n", n, d, f.degree, f.threshold,
                  f.site_seconds, f.coordinator_seconds, f.reference_seconds, f.key_bytes_per_site / 1e3, f.max_error,
                  sa::QuantizationError(n, 1.0));
      if (drop == 0) break;
    }
  }
  return 0;
}
