// The federation as it runs in a hospital network, on loopback: real
// fedtune-coordinator and fedtune-site processes with certificates from
// certs/fedtune-certs, synthetic hospitals ingested by fedtune-site, a tiny
// ViT. Asserts the outcome of complete jobs, every TLS/identity refusal, and
// recovery from killed processes.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/net/tls.h"
#include "fedtune/v1/admin.grpc.pb.h"
#include "fedtune/v1/federation.grpc.pb.h"
#include "tests/testing/free_port.h"
#include "tests/testing/loopback_coordinator.h"
#include "tests/testing/process.h"
#include "tests/testing/python_reference.h"
#include "tests/testing/run_command.h"

namespace fedtune {
namespace {

namespace fs = std::filesystem;
using testing::ChildProcess;
using testing::RunCommand;

const std::vector<std::string> kSites = {"hospital-a", "hospital-b", "hospital-c"};


std::vector<float> AsDoubles(const Tensor& t) {
  std::vector<float> v(t.data.size() / 4);
  std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

class Federation : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveOpenssl()) GTEST_SKIP() << "openssl is not installed";
    dir_ = ::testing::TempDir() + "/federation_" + std::to_string(getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::vector<std::string> pki_sites = {"hospital-x"};
    pki_sites.insert(pki_sites.end(), kSites.begin(), kSites.end());
    std::string out;
    ASSERT_EQ(testing::MakeFederationPki(dir_, {"alice", "bob", "carol"}, pki_sites, &out), 0) << out;
    ASSERT_EQ(RunCommand(std::string(FEDTUNE_CLI_BIN) + " backbone init --arch vit-tiny/16 --image-size 32 --seed 5 "
                                                        "--out " + dir_ + "/backbone.safetensors",
                         &out),
              0)
        << out;
    backbone_sha_ = out.substr(0, 64);
    port_ = testing::FreeLoopbackPort();
    ASSERT_GT(port_, 0);
    testing::CoordinatorToml toml;
    toml.port = port_;
    toml.enrolled = kSites;
    toml.operators = {"alice"};
    toml.viewers = {"bob"};
    std::ofstream(dir_ + "/coordinator.toml") << toml.Text();
    const char* styles[] = {"plain", "mono1-rle", "cr"};
    for (size_t i = 0; i < kSites.size(); ++i) {
      const std::string& s = kSites[i];
      const std::string sd = dir_ + "/" + s;
      fs::create_directories(sd);
      std::ofstream(sd + "/site.toml")
          << "[site]\nid = \"" << s << "\"\nworkspace = \"ws\"\n[ingest]\nimage_size = 32\nmin_rows = 64\n"
          << "min_columns = 64\n[labels]\nfindings = [\"Cardiomegaly\", \"Pleural effusion\", \"Nodule/Mass\", "
          << "\"Pneumothorax\"]\n[stats]\nk = 3\n[coordinator]\naddress = \"127.0.0.1:" << port_ << "\"\n"
          << "[tls]\nca = \"../pki/ca.pem\"\ncert = \"../pki/site/" << s << ".pem\"\nkey = \"../pki/site/" << s
          << ".key\"\n[training]\nbackbone = \"../backbone.safetensors\"\ndevice = \"cpu\"\nthreads = 1\n"
          << "bootstrap_resamples = 50\n";
      // A fixed site key makes the patient pseudonyms, and so the splits, the
      // same on every run (normally it is random, created on first use).
      fs::create_directories(sd + "/ws");
      ASSERT_TRUE(WriteFileAtomically(sd + "/ws/site.key", Sha256Hex("test key " + s).substr(0, 32), 0600).ok());
      const std::string site_bin = FEDTUNE_SITE_BIN;
      ASSERT_EQ(RunCommand(site_bin + " synth --out " + sd + "/pacs --site " + s + " --patients " +
                               std::to_string(24 + 6 * i) + " --size 96 --style " + styles[i] + " --seed " +
                               std::to_string(i + 1),
                           &out),
                0)
          << out;
      ASSERT_EQ(RunCommand(site_bin + " ingest --config " + sd + "/site.toml --source " + sd + "/pacs --labels " + sd +
                               "/pacs/labels.csv",
                           &out),
                0)
          << out;
    }
  }

  void TearDown() override {
    for (auto& [name, p] : sites_) p.Stop();
    coordinator_.Stop();
    if (!HasFailure()) fs::remove_all(dir_);
  }

  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }
  net::TlsFiles Files(const std::string& stem) const {
    return {dir_ + "/pki/ca.pem", dir_ + "/" + stem + ".pem", dir_ + "/" + stem + ".key", ""};
  }

  // A fresh admin channel per coordinator process.
  void StartCoordinator() {
    ASSERT_TRUE(testing::StartCoordinator(dir_, Address(), Files("pki/admin/alice"), &coordinator_, &admin_));
  }

  void StartSite(const std::string& s) {
    sites_[s] = ChildProcess({FEDTUNE_SITE_BIN, "run", "--config", "site.toml"}, dir_ + "/" + s + ".log",
                             dir_ + "/" + s);
    ASSERT_GT(sites_[s].pid(), 0);
  }

  // Waits until `n` sites are connected, so a round with a smaller quorum
  // does not start without the others.
  void WaitSitesConnected(int n) { ASSERT_TRUE(testing::WaitSitesConnected(*admin_, n, 30)); }

  std::string JobToml(int rounds, int min_sites, double deadline_s, const std::string& sha = "") const {
    return "[job]\nname = \"integration\"\nrounds = " + std::to_string(rounds) +
           "\nmin_sites = " + std::to_string(min_sites) + "\nround_deadline_s = " + std::to_string(deadline_s) +
           "\nmax_round_attempts = 1\n[backbone]\narchitecture = \"vit-tiny/16\"\nimage_size = 32\nsha256 = \"" +
           (sha.empty() ? backbone_sha_ : sha) +
           "\"\n[model]\nfindings = [\"Cardiomegaly\", \"Pleural effusion\", \"Nodule/Mass\", \"Pneumothorax\"]\n"
           "[model.lora]\nrank = 4\n[train]\nlocal_epochs = 2\nbatch_size = 8\nlearning_rate = 0.003\n";
  }

  std::string Submit(const std::string& toml) {
    grpc::ClientContext ctx;
    v1::SubmitJobRequest req;
    req.set_job_toml(toml);
    v1::SubmitJobResponse resp;
    grpc::Status s = admin_->SubmitJob(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp.job_id();
  }

  std::optional<v1::JobStatus> Job(const std::string& id) { return testing::GetJobStatus(*admin_, id); }

  // Polls the job until `done` holds (the coordinator may be down meanwhile).
  v1::JobStatus WaitJob(const std::string& id, const std::function<bool(const v1::JobStatus&)>& done,
                        int seconds = 120) {
    return testing::WaitForJob(*admin_, id, done, seconds);
  }

  static bool Finished(const v1::JobStatus& s) { return testing::JobFinished(s); }

  // A site task's state in the latest attempt of `round` (empty if none).
  static std::string SiteState(const v1::JobStatus& s, int round, const std::string& site) {
    std::string out;
    for (const auto& r : s.rounds()) {
      if (r.round() != round) continue;
      for (const auto& t : r.sites()) {
        if (t.site_id() == site) out = t.state();
      }
    }
    return out;
  }

  std::string dir_;
  std::string backbone_sha_;
  int port_ = 0;
  ChildProcess coordinator_;
  std::map<std::string, ChildProcess> sites_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// Every command's --help shows its own example, not the program's; global
// options are taken after the command too.
TEST(FedtuneCli, EachCommandShowsItsOwnExampleAndGlobalOptionsGoAnywhere) {
  const std::string cli = FEDTUNE_CLI_BIN;
  std::string out;
  for (const std::string command : {"job submit", "job list", "job status", "job watch", "job cancel", "sites",
                                    "model export", "model promote", "model list", "report", "backbone init",
                                    "simulate", "study scaling", "study strategies"}) {
    ASSERT_EQ(RunCommand(cli + " " + command + " --help", &out), 0) << command;
    EXPECT_NE(out.find("  fedtune " + command), std::string::npos) << command << ":\n" << out;
    EXPECT_EQ(out.find("export FEDTUNE_COORDINATOR"), std::string::npos) << command << " shows the program's examples";
  }
  // Pretraining reads a site workspace: it is the site tool's, not the operator's.
  EXPECT_NE(RunCommand(cli + " backbone pretrain --workspace ws --findings Cardiomegaly --out b.safetensors", &out), 0);
  ASSERT_EQ(RunCommand(cli + " backbone --help", &out), 0);
  EXPECT_EQ(out.find("\n  pretrain "), std::string::npos) << out;
  EXPECT_NE(out.find("fedtune-site backbone pretrain"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(cli + " job list --coordinator localhost --ca a --cert b --key c", &out), 1);
  EXPECT_NE(out.find("--coordinator: coordinator address \"localhost\" has no port"), std::string::npos) << out;
}

TEST_F(Federation, ThreeSitesCompleteThreeRoundsAndTheExportIsTheWeightedMean) {
  StartCoordinator();
  for (const auto& s : kSites) StartSite(s);
  const std::string job = Submit(JobToml(3, 3, 120));
  const v1::JobStatus st = WaitJob(job, Finished, 240);
  ASSERT_EQ(st.state(), v1::JOB_STATE_SUCCEEDED) << st.reason();
  EXPECT_EQ(st.rounds_done(), 3);
  ASSERT_EQ(st.rounds_size(), 4);  // three rounds and the final evaluation
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(st.rounds(r).state(), "aggregated");
    ASSERT_EQ(st.rounds(r).sites_size(), 3);
    for (const auto& s : st.rounds(r).sites()) {
      EXPECT_EQ(s.state(), "accepted") << s.reason();
      EXPECT_GT(s.num_examples(), 0);
      EXPECT_GT(s.val_after().examples(), 0);
      EXPECT_EQ(s.val_after().findings_size(), 4);
    }
  }
  for (const auto& s : st.rounds(3).sites()) {
    EXPECT_EQ(s.state(), "accepted");
    EXPECT_EQ(s.evaluation().split(), "test");
    EXPECT_GT(s.evaluation().examples(), 0);
  }

  // The exported global model (fedtune model export, the operator's CLI)
  // equals the example-weighted mean of the three round-3 updates.
  const std::string out_dir = dir_ + "/export";
  std::string out;
  ASSERT_EQ(RunCommand(std::string(FEDTUNE_CLI_BIN) + " --coordinator " + Address() + " --ca " + dir_ +
                           "/pki/ca.pem --cert " + dir_ + "/pki/admin/alice.pem --key " + dir_ +
                           "/pki/admin/alice.key model export " + job + " --round 3 --out " + out_dir,
                       &out),
            0)
      << out;
  auto exported = SafetensorsFile::Open(out_dir + "/adapter_model.safetensors");
  ASSERT_TRUE(exported.ok()) << exported.status();
  auto config = ReadFileBytes(out_dir + "/adapter_config.json");
  ASSERT_TRUE(config.ok());
  EXPECT_NE(config->find("\"peft_type\": \"LORA\""), std::string::npos) << *config;
  std::map<std::string, std::vector<double>> sum;
  double total = 0;
  for (const auto& s : st.rounds(2).sites()) {
    auto update = SafetensorsFile::Open(dir_ + "/state/blobs/" + job + "/update-r3a1-" + s.site_id() + ".safetensors");
    ASSERT_TRUE(update.ok()) << update.status();
    EXPECT_EQ(Sha256FileHex(dir_ + "/state/blobs/" + job + "/update-r3a1-" + s.site_id() + ".safetensors").value(),
              s.update_sha256());
    const double w = static_cast<double>(s.num_examples());
    total += w;
    for (const auto& [name, t] : update->ReadAll()) {
      auto v = AsDoubles(t);
      auto& acc = sum[name];
      acc.resize(v.size(), 0.0);
      for (size_t i = 0; i < v.size(); ++i) acc[i] += w * v[i];
    }
  }
  const TensorMap global = exported->ReadAll();
  ASSERT_EQ(global.size(), sum.size());
  double max_diff = 0;
  for (const auto& [name, acc] : sum) {
    auto g = AsDoubles(global.at(name));
    ASSERT_EQ(g.size(), acc.size()) << name;
    for (size_t i = 0; i < g.size(); ++i) max_diff = std::max(max_diff, std::abs(g[i] - acc[i] / total));
  }
  EXPECT_LT(max_diff, 1e-6);
  EXPECT_GT(sum.size(), 4u) << "LoRA A/B of the targeted layers plus the head";

  // --json: numbers as numbers, states as lower-case words, withheld counts
  // as null (never -1).
  const std::string cli = std::string(FEDTUNE_CLI_BIN) + " --coordinator " + Address() + " --ca " + dir_ +
                          "/pki/ca.pem --cert " + dir_ + "/pki/admin/alice.pem --key " + dir_ + "/pki/admin/alice.key ";
  ASSERT_EQ(RunCommand(cli + "job status " + job + " --json 2>/dev/null", &out), 0) << out;
  const auto status = nlohmann::json::parse(out);
  EXPECT_EQ(status["state"], "succeeded") << out.substr(0, 400);
  EXPECT_TRUE(status["rounds_done"].is_number_integer());
  EXPECT_TRUE(status["created_unix_ms"].is_number_integer());
  ASSERT_EQ(RunCommand(cli + "sites --json 2>/dev/null", &out), 0) << out;
  const auto sites = nlohmann::json::parse(out);
  int counts = 0;
  for (const auto& site : sites["sites"]) {
    for (const auto& split : site["dataset"]["splits"]) {
      EXPECT_TRUE(split["images"].is_number_integer() || split["images"].is_null()) << split.dump();
      for (const auto& p : split["positives"]) {
        EXPECT_TRUE(p.is_null() || (p.is_number_integer() && p.get<int64_t>() >= 0)) << split.dump();
        ++counts;
      }
    }
  }
  EXPECT_GT(counts, 0) << out.substr(0, 400);
}

// The simulator swaps the transport, never the logic: the same job over the
// same sites' workspaces, run in one process by `fedtune simulate`, ends with
// the same global weights as the coordinator and three site daemons over
// mutual TLS.
TEST_F(Federation, SimulatedJobEndsWithTheRealFederationsWeights) {
  StartCoordinator();
  for (const auto& s : kSites) StartSite(s);
  const std::string toml = JobToml(2, 3, 120);
  const std::string job = Submit(toml);
  const v1::JobStatus st = WaitJob(job, Finished, 240);
  ASSERT_EQ(st.state(), v1::JOB_STATE_SUCCEEDED) << st.reason();
  for (auto& [name, p] : sites_) p.Stop();  // the workspaces are the simulation's now
  coordinator_.Stop();

  std::ofstream(dir_ + "/job.toml") << toml;
  std::ofstream(dir_ + "/sim.toml") << "[simulation]\njob = \"job.toml\"\nwork_dir = \"sim\"\n"
                                    << "[[site]]\nconfig = \"hospital-a/site.toml\"\n"
                                    << "[[site]]\nconfig = \"hospital-b/site.toml\"\n"
                                    << "[[site]]\nconfig = \"hospital-c/site.toml\"\n";
  std::string out;
  ASSERT_EQ(RunCommand("(" + std::string(FEDTUNE_CLI_BIN) + " simulate --config " + dir_ + "/sim.toml --json 2>" +
                           dir_ + "/sim.log)",
                       &out),
            0)
      << out << ReadFileBytes(dir_ + "/sim.log").value_or("");
  const auto result = nlohmann::json::parse(out);
  EXPECT_EQ(result["state"], "succeeded");
  EXPECT_EQ(result["rounds_done"], 2);
  EXPECT_TRUE(fs::exists(result["report"].get<std::string>())) << out;

  auto simulated = SafetensorsFile::Open(result["final_weights"].get<std::string>());
  ASSERT_TRUE(simulated.ok()) << simulated.status();
  auto real = SafetensorsFile::Open(dir_ + "/state/blobs/" + job + "/global-v2.safetensors");
  ASSERT_TRUE(real.ok()) << real.status();
  const TensorMap a = simulated->ReadAll(), b = real->ReadAll();
  ASSERT_EQ(a.size(), b.size());
  double max_diff = 0, max_abs = 0;
  for (const auto& [name, t] : b) {
    ASSERT_TRUE(a.count(name)) << name;
    auto x = AsDoubles(a.at(name)), y = AsDoubles(t);
    ASSERT_EQ(x.size(), y.size()) << name;
    for (size_t i = 0; i < x.size(); ++i) {
      max_diff = std::max<double>(max_diff, std::abs(x[i] - y[i]));
      max_abs = std::max<double>(max_abs, std::abs(y[i]));
    }
  }
  EXPECT_GT(max_abs, 1e-3) << "the weights moved from zero";
  EXPECT_LT(max_diff, 1e-5) << "largest difference between the simulated and the real global weights";

  // Run again: the finished job is found in the simulation's state, not run twice.
  ASSERT_EQ(RunCommand("(" + std::string(FEDTUNE_CLI_BIN) + " simulate --config " + dir_ + "/sim.toml 2>/dev/null)", &out),
            0)
      << out;
  EXPECT_NE(out.find("continued from an earlier run"), std::string::npos) << out;
}

// What a Prometheus server scrapes while a job runs: Debian's prometheus on
// loopback scrapes the coordinator over HTTPS with a viewer's admin
// certificate and a site over loopback HTTP; the series are read back
// through its query API.
std::string Which(const std::string& program) {
  std::string out;
  if (RunCommand("command -v " + program, &out) != 0) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// The value of an instant query's first series, or nullopt.
std::optional<double> PromQuery(int port, const std::string& query) {
  std::string out;
  if (RunCommand("curl -sS --max-time 5 -G http://127.0.0.1:" + std::to_string(port) +
                     "/api/v1/query --data-urlencode 'query=" + query + "'",
                 &out) != 0) {
    return std::nullopt;
  }
  const auto j = nlohmann::json::parse(out, nullptr, false);
  if (j.is_discarded() || j.value("status", "") != "success" || j["data"]["result"].empty()) return std::nullopt;
  return std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
}

// Secure aggregation with the real daemons: the sites exchange keys through
// the coordinator (checking each other's certificates), send masked vectors
// and the shares that remove the masks. The coordinator's state holds no
// update, and the new global equals what plain FedAvg makes of the same
// training (same seeds, one thread: the same updates) within the fixed
// point's resolution.
TEST_F(Federation, SecureAggregationGivesFedAvgsModelWithoutAnyUpdateInTheClear) {
  StartCoordinator();
  for (const auto& s : kSites) StartSite(s);
  WaitSitesConnected(3);
  const std::string plain = Submit(JobToml(1, 3, 120));
  const v1::JobStatus a = WaitJob(plain, Finished, 240);
  ASSERT_EQ(a.state(), v1::JOB_STATE_SUCCEEDED) << a.reason();
  const std::string secure = Submit(JobToml(1, 3, 120) + "[privacy]\nsecure_aggregation = true\n");
  const v1::JobStatus b = WaitJob(secure, Finished, 240);
  ASSERT_EQ(b.state(), v1::JOB_STATE_SUCCEEDED) << b.reason();
  ASSERT_EQ(b.rounds(0).state(), "aggregated");
  for (const auto& site : b.rounds(0).sites()) EXPECT_EQ(site.state(), "accepted") << site.reason();
  const std::string blobs = dir_ + "/state/blobs/";
  for (const auto& f : fs::recursive_directory_iterator(blobs + secure)) {
    EXPECT_EQ(f.path().filename().string().find("update"), std::string::npos) << f.path();
  }
  // Weights: plain FedAvg by the examples each update declared, secure by
  // the training images each site declared; the same numbers here.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a.rounds(0).sites(i).num_examples(), b.rounds(0).sites(i).num_examples());
  }
  const TensorMap v0a = SafetensorsFile::Open(blobs + plain + "/global-v0.safetensors")->ReadAll();
  const TensorMap v0b = SafetensorsFile::Open(blobs + secure + "/global-v0.safetensors")->ReadAll();
  ASSERT_EQ(v0a, v0b) << "both jobs start from the same model";
  const TensorMap v1a = SafetensorsFile::Open(blobs + plain + "/global-v1.safetensors")->ReadAll();
  const TensorMap v1b = SafetensorsFile::Open(blobs + secure + "/global-v1.safetensors")->ReadAll();
  ASSERT_EQ(v1a.size(), v1b.size());
  double max_diff = 0, moved = 0;
  for (const auto& [name, t] : v1a) {
    const auto x = AsDoubles(t), y = AsDoubles(v1b.at(name)), z = AsDoubles(v0a.at(name));
    for (size_t i = 0; i < x.size(); ++i) {
      max_diff = std::max(max_diff, static_cast<double>(std::abs(x[i] - y[i])));
      moved = std::max(moved, static_cast<double>(std::abs(x[i] - z[i])));
    }
  }
  EXPECT_GT(moved, 1e-3) << "the round changed the model";
  EXPECT_LT(max_diff, 1e-6);
  std::string log = *ReadFileBytes(dir_ + "/hospital-a.log");
  EXPECT_NE(log.find("masks of 3 sites removed by this site's shares"), std::string::npos) << log.substr(0, 2000);

  // Distributed differential privacy on top: the sites clip and add the
  // noise; the job accounts epsilon like central DP.
  const std::string noisy = Submit(JobToml(1, 3, 120) +
                                   "[privacy]\nsecure_aggregation = true\ndifferential_privacy = \"distributed\"\n"
                                   "noise_multiplier = 0.5\nclip_norm = 1.0\n");
  const v1::JobStatus c = WaitJob(noisy, Finished, 240);
  ASSERT_EQ(c.state(), v1::JOB_STATE_SUCCEEDED) << c.reason();
  EXPECT_EQ(c.privacy().mechanism(), "distributed DP-FedAvg");
  EXPECT_EQ(c.privacy().rounds_accounted(), 1);
  EXPECT_GT(c.privacy().epsilon_spent(), 0);
  const TensorMap v1c = SafetensorsFile::Open(blobs + noisy + "/global-v1.safetensors")->ReadAll();
  double sq = 0;
  for (const auto& [name, t] : v1c) {
    const auto x = AsDoubles(t), z = AsDoubles(v0a.at(name));
    for (size_t i = 0; i < x.size(); ++i) sq += (x[i] - z[i]) * (x[i] - z[i]);
  }
  // The mean of three differences clipped to 1, plus noise of sd
  // 0.5 x 1 / sqrt(3) per value per site: far from zero, and bounded.
  EXPECT_GT(std::sqrt(sq), 0.1);
}

// The dashboard in a real browser (headless Chromium driven over the
// DevTools protocol) while a job runs: the page loads mid-job and follows it
// over Server-Sent Events without a reload; a screenshot is kept.
TEST_F(Federation, DashboardFollowsAJobLiveInChromium) {
  const std::string chromium = Which("chromium");
  if (chromium.empty() || Which("curl").empty() || !testing::PythonHas("json")) {
    GTEST_SKIP() << "chromium or curl not installed (deploy/install-deps.sh installs them)";
  }
  const int http_port = testing::FreeLoopbackPort();
  std::ofstream(dir_ + "/coordinator.toml", std::ios::app)
      << "[http]\nlisten = \"127.0.0.1:" << http_port << "\"\n[dashboard]\nenabled = true\n";
  StartCoordinator();
  for (const auto& s : kSites) StartSite(s);
  WaitSitesConnected(3);
  const std::string base = "http://127.0.0.1:" + std::to_string(http_port);
  const std::string job = Submit(JobToml(5, 3, 120));
  // The page opens once the first round is aggregated, four still to come.
  const v1::JobStatus first = WaitJob(job, [](const v1::JobStatus& s) { return s.rounds_done() >= 1; }, 120);
  ASSERT_GE(first.rounds_done(), 1);
  ASSERT_LT(first.rounds_done(), 5) << "the job ran ahead of the test";

  std::string out;
  ASSERT_EQ(RunCommand("curl -sS --max-time 10 " + base + "/api/jobs", &out), 0) << out;
  EXPECT_NE(out.find(job), std::string::npos) << out;
  ASSERT_EQ(RunCommand("curl -sS --max-time 10 " + base + "/api/sites", &out), 0) << out;
  const auto sites = nlohmann::json::parse(out, nullptr, false);
  ASSERT_TRUE(sites.is_array()) << out;
  EXPECT_EQ(sites.size(), 3u);
  ASSERT_EQ(RunCommand("curl -sS --max-time 10 -o /dev/null -w '%{http_code}' " + base + "/api/jobs/nope", &out), 0);
  EXPECT_EQ(out, "404");

  const std::string shots = std::string(FEDTUNE_ARTEFACT_DIR);
  fs::create_directories(shots);
  const std::string page_dir = dir_ + "/browser";
  const std::string until =
      "document.body.dataset.firstRoundsDone !== undefined && "
      "Number(document.body.dataset.roundsDone) > Number(document.body.dataset.firstRoundsDone) + 1 && "
      "document.querySelectorAll('#sites tr').length === 3";
  const int rc = RunCommand(testing::Python3() + " " + testing::SourceDir() + "/tests/testing/cdp_page.py '" +
                                chromium + "' '" + base + "/#job=" + job + "' " + page_dir + " --until \"" + until +
                                "\" --timeout 180",
                            &out);
  const std::string dom = ReadFileBytes(page_dir + "/dom.html").value_or("");
  ASSERT_EQ(rc, 0) << "the page did not follow the job: " << out << "\n" << dom.substr(0, 4000);
  EXPECT_EQ(ReadFileBytes(page_dir + "/errors.txt").value_or("?"), "");
  // What the DOM shows: updates applied without a reload, the grid, the chart, sites, events.
  auto attribute = [&](const std::string& name) {
    const size_t at = dom.find(name + "=\"");
    return at == std::string::npos ? -1 : std::atoi(dom.c_str() + at + name.size() + 2);
  };
  EXPECT_GE(attribute("data-updates"), 2) << dom.substr(0, 400);
  EXPECT_GT(attribute("data-rounds-done"), attribute("data-first-rounds-done"));
  EXPECT_NE(dom.find("id=\"job-id\">" + job), std::string::npos);
  for (const auto& s : kSites) {
    EXPECT_NE(dom.find("<th>" + s + "</th>"), std::string::npos) << s;      // a grid column
    EXPECT_NE(dom.find("data-site=\"" + s + "\""), std::string::npos) << s;  // its health row
  }
  EXPECT_NE(dom.find("<tr data-round=\"1\">"), std::string::npos);
  EXPECT_NE(dom.find("data-kind=\"update_accepted\""), std::string::npos);
  EXPECT_NE(dom.find("data-kind=\"round_aggregated\""), std::string::npos);
  EXPECT_NE(dom.find("<span>  loss "), std::string::npos);  // training loss in the grid
  // The chart: one point per round whose accepted sites reported a validation AUROC (these small sites'
  // validation splits often have no finding with both classes, so not every round has one).
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (size_t at = dom.find(what); at != std::string::npos; at = dom.find(what, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("<circle"), count("data-mean-auroc=\""));
  EXPECT_NE(dom.find(count("<circle") > 0 ? "<polyline" : "no validation AUROC yet"), std::string::npos);
  const auto png = ReadFileBytes(page_dir + "/screenshot.png");
  ASSERT_TRUE(png.ok() && png->size() > 10000 && png->substr(1, 3) == "PNG") << "no screenshot";
  fs::copy_file(page_dir + "/screenshot.png", shots + "/dashboard.png", fs::copy_options::overwrite_existing);
  std::cout << "dashboard screenshot: " << shots << "/dashboard.png\n";

  // Once the job is done the report is one link away.
  ASSERT_EQ(WaitJob(job, Finished, 240).state(), v1::JOB_STATE_SUCCEEDED);
  ASSERT_EQ(RunCommand("curl -sS --max-time 30 " + base + "/jobs/" + job + "/report.html", &out), 0);
  EXPECT_NE(out.find("<html"), std::string::npos) << out.substr(0, 300);
}

TEST_F(Federation, PrometheusWatchesAJobAndSitesTakeThePromotedModel) {
  const std::string prometheus = Which("prometheus");
  if (prometheus.empty() || Which("curl").empty()) {
    GTEST_SKIP() << "prometheus or curl not installed (Debian packages prometheus, curl; deploy/install-deps.sh)";
  }
  const int coordinator_http = testing::FreeLoopbackPort();
  const int site_http = testing::FreeLoopbackPort();
  const int prom_port = testing::FreeLoopbackPort();
  std::ofstream(dir_ + "/coordinator.toml", std::ios::app)
      << "[http]\nlisten = \"127.0.0.1:" << coordinator_http << "\"\ntls = true\n";
  std::ofstream(dir_ + "/hospital-a/site.toml", std::ios::app) << "[http]\nlisten = \"127.0.0.1:" << site_http << "\"\n";
  // These small sites share their validation score histograms only with k = 1
  // (with k = 3 every finding is withheld somewhere), and --best needs them.
  for (const auto& s : kSites) {
    std::string toml = *ReadFileBytes(dir_ + "/" + s + "/site.toml");
    toml.replace(toml.find("k = 3"), 5, "k = 1");
    ASSERT_TRUE(WriteFileAtomically(dir_ + "/" + s + "/site.toml", toml).ok());
  }
  StartCoordinator();
  for (const auto& s : kSites) StartSite(s);

  // The coordinator's endpoint takes admin certificates on its [admins] list.
  std::string out;
  const std::string url = "https://127.0.0.1:" + std::to_string(coordinator_http) + "/metrics";
  auto curl = [&](const std::string& who) {
    const auto f = Files("pki/" + who);
    return RunCommand("curl -sS --max-time 5 -o /dev/null -w '%{http_code}' --cacert " + f.ca_pem + " --cert " +
                          f.cert_pem + " --key " + f.key_pem + " " + url,
                      &out) == 0
               ? out
               : "no answer: " + out;
  };
  EXPECT_EQ(curl("admin/bob"), "200");    // a viewer
  EXPECT_EQ(curl("admin/carol"), "403");  // an admin certificate not on the list
  EXPECT_EQ(curl("site/hospital-a"), "403");

  std::ofstream(dir_ + "/prometheus.yml")
      << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n"
      << "  - job_name: coordinator\n    scheme: https\n    tls_config:\n      ca_file: " << dir_
      << "/pki/ca.pem\n      cert_file: " << dir_ << "/pki/admin/bob.pem\n      key_file: " << dir_
      << "/pki/admin/bob.key\n    static_configs:\n      - targets: ['127.0.0.1:" << coordinator_http << "']\n"
      << "  - job_name: site\n    static_configs:\n      - targets: ['127.0.0.1:" << site_http << "']\n";
  ChildProcess prom({prometheus, "--config.file=" + dir_ + "/prometheus.yml", "--storage.tsdb.path=" + dir_ + "/tsdb",
                     "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
                    dir_ + "/prometheus.log");
  ASSERT_GT(prom.pid(), 0);

  WaitSitesConnected(3);
  const std::string job = Submit(JobToml(2, 3, 120));
  const v1::JobStatus st = WaitJob(job, Finished, 240);
  ASSERT_EQ(st.state(), v1::JOB_STATE_SUCCEEDED) << st.reason();

  // Each expectation waits for a scrape after the job (1 s interval).
  auto eventually = [&](const std::string& query, const std::function<bool(double)>& ok) {
    std::optional<double> v;
    for (int i = 0; i < 100; ++i) {
      v = PromQuery(prom_port, query);
      if (v && ok(*v)) return ::testing::AssertionSuccess();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return ::testing::AssertionFailure() << query << " = " << (v ? std::to_string(*v) : "no series")
                                         << "; see " << dir_ << "/prometheus.log";
  };
  auto at_least = [](double n) { return [n](double v) { return v >= n; }; };
  EXPECT_TRUE(eventually("up{job=\"coordinator\"}", at_least(1)));
  EXPECT_TRUE(eventually("up{job=\"site\"}", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_coordinator_jobs{state=\"succeeded\"}", [](double v) { return v == 1; }));
  EXPECT_TRUE(eventually("fedtune_coordinator_rounds_total{kind=\"train\",outcome=\"aggregated\"}", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_coordinator_round_duration_seconds_count{kind=\"train\"}", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_coordinator_updates_accepted_total", at_least(9)));  // 2 x 3 updates + 3 evaluations
  EXPECT_TRUE(eventually("fedtune_coordinator_sites_connected", [](double v) { return v == 3; }));
  EXPECT_TRUE(eventually("fedtune_coordinator_sent_bytes_total", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_coordinator_received_bytes_total", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_site_tasks_total{kind=\"train\",outcome=\"accepted\"}", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_site_tasks_total{kind=\"evaluate\",outcome=\"accepted\"}", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_site_training_images_per_second", at_least(0.001)));
  EXPECT_TRUE(eventually("fedtune_site_training_epochs_total", at_least(2)));
  EXPECT_TRUE(eventually("fedtune_site_images{split=\"train\"}", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_site_coordinator_connected", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_build_info{component=\"site\"}", at_least(1)));

  // Promotion: operators choose, sites fetch and serve, rollback uses the
  // model a site kept.
  const std::string cli = std::string(FEDTUNE_CLI_BIN) + " --coordinator " + Address() + " --ca " + dir_ + "/pki/ca.pem ";
  auto as = [&](const std::string& who) {
    return cli + "--cert " + dir_ + "/pki/admin/" + who + ".pem --key " + dir_ + "/pki/admin/" + who + ".key ";
  };
  ASSERT_EQ(RunCommand(as("alice") + "model promote " + job + " --best --json 2>&1", &out), 0) << out;
  const auto best = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(best.is_discarded()) << out;
  EXPECT_EQ(best["promoted_by"], "alice");
  EXPECT_TRUE(best["version"] == 1 || best["version"] == 2) << out;
  EXPECT_NE(best["note"].get<std::string>().find("best pooled validation macro AUROC"), std::string::npos) << out;
  EXPECT_EQ(best["thresholds"].size(), 4u) << out;
  const auto served = [&](int version) {
    return eventually("fedtune_site_served_model_version", [version](double v) { return v == version; });
  };
  EXPECT_TRUE(served(best["version"].get<int>()));
  ASSERT_EQ(RunCommand(as("alice") + "model promote " + job + " --round 1", &out), 0) << out;
  EXPECT_TRUE(served(1));
  ASSERT_EQ(RunCommand(as("alice") + "model promote " + job, &out), 0) << out;  // the latest
  EXPECT_TRUE(served(2));
  EXPECT_TRUE(fs::exists(dir_ + "/hospital-a/ws/models/current.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ + "/hospital-a/ws/models/previous.safetensors"));
  ASSERT_EQ(RunCommand(as("alice") + "model promote --rollback", &out), 0) << out;
  EXPECT_TRUE(served(1));
  EXPECT_TRUE(eventually("fedtune_site_served_model_info{version=\"1\"}", at_least(1)));
  EXPECT_TRUE(eventually("fedtune_site_served_model_info{version=\"2\"}", [](double v) { return v == 0; }));
  EXPECT_EQ(RunCommand(as("bob") + "model promote " + job + " --round 2", &out), 1);  // a viewer
  EXPECT_NE(out.find("viewer"), std::string::npos) << out;
  ASSERT_EQ(RunCommand(as("bob") + "model list --json 2>&1", &out), 0) << out;
  const auto history = nlohmann::json::parse(out, nullptr, false);
  ASSERT_EQ(history["promotions"].size(), 4u) << out;
  EXPECT_EQ(history["promotions"][3]["action"], "rollback");
  EXPECT_EQ(history["promotions"][3]["version"], 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const std::string log = ReadFileBytes(dir_ + "/hospital-a.log").value_or("");
  EXPECT_NE(log.find("fetched the promoted model; serving job " + job + " version 2"), std::string::npos) << log;
  EXPECT_NE(log.find("back to the kept previous model; serving job " + job + " version 1"), std::string::npos);
  prom.Stop();
}

// BitFit federates from the sites' base weights and exports as a transformers
// model built from the base file plus the federation's changes; a job with
// no aggregated round has nothing to export.
TEST_F(Federation, BitFitExportsAsATransformersModelFromTheBaseWeights) {
  StartCoordinator();
  for (const auto& s : kSites) StartSite(s);
  std::string toml = JobToml(1, 3, 120);
  const std::string lora = "[model.lora]\nrank = 4\n";
  toml.replace(toml.find(lora), lora.size(), "");
  toml.replace(toml.find("[model]\n"), 8, "[model]\nmethod = \"bitfit\"\n");
  const std::string job = Submit(toml);
  const v1::JobStatus st = WaitJob(job, Finished, 240);
  ASSERT_EQ(st.state(), v1::JOB_STATE_SUCCEEDED) << st.reason();
  const std::string cli = std::string(FEDTUNE_CLI_BIN) + " --coordinator " + Address() + " --ca " + dir_ +
                          "/pki/ca.pem --cert " + dir_ + "/pki/admin/alice.pem --key " + dir_ +
                          "/pki/admin/alice.key ";
  std::string out;
  EXPECT_EQ(RunCommand(cli + "model export " + job + " --out " + dir_ + "/hf", &out), 1);
  EXPECT_NE(out.find("--backbone FILE"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(cli + "model export " + job + " --backbone " + dir_ + "/state/coordinator.sqlite --out " +
                           dir_ + "/hf",
                       &out),
            1);
  EXPECT_NE(out.find("not the file the sites trained from"), std::string::npos) << out;
  ASSERT_EQ(RunCommand(cli + "model export " + job + " --backbone " + dir_ + "/backbone.safetensors --out " + dir_ +
                           "/hf",
                       &out),
            0)
      << out;
  auto model = SafetensorsFile::Open(dir_ + "/hf/model.safetensors");
  ASSERT_TRUE(model.ok()) << model.status();
  auto config = ReadFileBytes(dir_ + "/hf/config.json");
  ASSERT_TRUE(config.ok());
  EXPECT_NE(config->find("Dinov2ForImageClassification"), std::string::npos);
  // Each bias is the base file's plus the federation's change; each weight
  // is the base file's.
  const TensorMap exported = model->ReadAll();
  const TensorMap base = SafetensorsFile::Open(dir_ + "/backbone.safetensors")->ReadAll();
  const TensorMap global = SafetensorsFile::Open(dir_ + "/state/blobs/" + job + "/global-v1.safetensors")->ReadAll();
  int biases = 0, weights = 0;
  for (const auto& [name, t] : base) {
    if (name == "embeddings.mask_token") continue;
    const std::string hf = "dinov2." + name;
    ASSERT_TRUE(exported.count(hf)) << hf;
    const auto got = AsDoubles(exported.at(hf)), b = AsDoubles(t);
    auto delta = global.find("base_model.model.dinov2." + name);
    double max_diff = 0;
    for (size_t i = 0; i < b.size(); ++i) {
      const double want = b[i] + (delta == global.end() ? 0.0 : AsDoubles(delta->second)[i]);
      max_diff = std::max(max_diff, std::abs(got[i] - want));
    }
    EXPECT_LT(max_diff, 1e-6) << name;
    (delta == global.end() ? weights : biases)++;
  }
  EXPECT_GT(biases, 10);
  EXPECT_GT(weights, 10);
  // A job that has not aggregated a round: refused, saying so. (With one
  // site stopped, a job that needs all three waits for it.)
  sites_["hospital-c"].Stop();
  const std::string waiting = Submit(JobToml(1, 3, 120));
  ASSERT_NE(RunCommand(cli + "model export " + waiting + " --out " + dir_ + "/none", &out), 0);
  EXPECT_NE(out.find("has no aggregated round yet"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir_ + "/none"));
}

TEST_F(Federation, RefusesEveryoneWhoseCertificateDoesNotGrantTheCall) {
  StartCoordinator();
  auto client = [&](const std::string& stem) {
    auto creds = net::MakeClientCredentials(Files(stem));
    EXPECT_TRUE(creds.ok());
    return v1::Federation::NewStub(grpc::CreateChannel(Address(), *creds));
  };
  auto join = [&](v1::Federation::Stub& stub) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::JoinRequest req;
    req.set_session_id("test-session");
    v1::JoinResponse resp;
    return stub.Join(&ctx, req, &resp);
  };
  // Valid certificate from the federation CA, but not enrolled.
  auto intruder = client("pki/site/hospital-x");
  grpc::Status s = join(*intruder);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_NE(s.error_message().find("not enrolled"), std::string::npos);
  // An enrolled site whose summary claims 10^12 training images.
  {
    auto liar = client("pki/site/hospital-c");
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::JoinRequest req;
    req.set_session_id("liar");
    auto* split = req.mutable_dataset()->add_splits();
    split->set_split("train");
    split->set_images(1'000'000'000'000);
    v1::JoinResponse resp;
    grpc::Status st = liar->Join(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find("more than 10^9 images"), std::string::npos) << st.error_message();
  }
  // An admin certificate on the site API.
  auto admin_as_site = client("pki/admin/alice");
  EXPECT_EQ(join(*admin_as_site).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // A site certificate on the Admin API.
  auto site_creds = net::MakeClientCredentials(Files("pki/site/hospital-a"));
  auto site_as_admin = v1::Admin::NewStub(grpc::CreateChannel(Address(), *site_creds));
  {
    grpc::ClientContext ctx;
    v1::ListJobsResponse resp;
    EXPECT_EQ(site_as_admin->ListJobs(&ctx, v1::ListJobsRequest(), &resp).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
    grpc::ClientContext ctx2;
    v1::SubmitJobRequest req;
    req.set_job_toml(JobToml(1, 1, 60));
    v1::SubmitJobResponse r2;
    EXPECT_EQ(site_as_admin->SubmitJob(&ctx2, req, &r2).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  // Site A asking for, and submitting to, site B's task.
  auto a = client("pki/site/hospital-a");
  auto b = client("pki/site/hospital-b");
  ASSERT_TRUE(join(*a).ok());
  ASSERT_TRUE(join(*b).ok());
  Submit(JobToml(1, 2, 60));
  v1::Task task_b;
  for (int i = 0; i < 50 && task_b.task_id().empty(); ++i) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("fedtune-session", "test-session");
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::PollTaskResponse resp;
    ASSERT_TRUE(b->PollTask(&ctx, v1::PollTaskRequest(), &resp).ok());
    if (resp.has_task()) task_b = resp.task();
  }
  ASSERT_FALSE(task_b.task_id().empty());
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("fedtune-session", "test-session");
    v1::FetchWeightsRequest req;
    req.set_task_id(task_b.task_id());
    *req.mutable_weights() = task_b.train().weights();
    auto reader = a->FetchWeights(&ctx, req);
    v1::WeightsChunk chunk;
    EXPECT_FALSE(reader->Read(&chunk));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("fedtune-session", "test-session");
    v1::SubmitUpdateResponse resp;
    auto writer = a->SubmitUpdate(&ctx, &resp);
    v1::UpdateChunk header;
    header.mutable_header()->set_task_id(task_b.task_id());
    header.mutable_header()->set_job_id(task_b.job_id());
    header.mutable_header()->set_round(task_b.round());
    header.mutable_header()->set_num_examples(1);
    writer->Write(header);
    writer->WritesDone();
    grpc::Status st = writer->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  }
  // Site B's own fetch works, and its task is untouched by A's attempt.
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("fedtune-session", "test-session");
    v1::FetchWeightsRequest req;
    req.set_task_id(task_b.task_id());
    *req.mutable_weights() = task_b.train().weights();
    auto reader = b->FetchWeights(&ctx, req);
    v1::WeightsChunk chunk;
    std::string bytes;
    std::string sha;
    while (reader->Read(&chunk)) {
      bytes += chunk.data();
      if (!chunk.sha256().empty()) sha = chunk.sha256();
    }
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(Sha256Hex(bytes), sha);
    EXPECT_EQ(sha, task_b.train().weights().sha256());
  }
  auto st = Job(task_b.job_id());
  ASSERT_TRUE(st);
  EXPECT_EQ(SiteState(*st, 1, "hospital-b"), "running");
}

// One coordinator per state directory and port; one live daemon per site
// identity; a site.toml that names another site than its certificate; admin
// roles; a certificate revoked while the coordinator runs.
TEST_F(Federation, OneCoordinatorOneSessionPerSiteRolesAndLiveRevocation) {
  StartCoordinator();
  std::string out;
  // A second coordinator on the same state directory names the first.
  ASSERT_NE(RunCommand("cd " + dir_ + " && timeout 20 " + std::string(FEDTUNE_COORDINATOR_BIN) +
                           " serve --config coordinator.toml",
                       &out),
            0);
  EXPECT_NE(out.find("another coordinator is running on this state directory"), std::string::npos) << out;
  EXPECT_NE(out.find("(fedtune-coordinator pid " + std::to_string(coordinator_.pid()) + ", listening on " + Address()),
            std::string::npos)
      << out;
  // ... and on the same port with another state directory it cannot listen.
  {
    std::ifstream in(dir_ + "/coordinator.toml");
    std::string toml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    toml.replace(toml.find("state_dir = \"state\""), 19, "state_dir = \"state2\"");
    std::ofstream(dir_ + "/coordinator2.toml") << toml;
  }
  ASSERT_NE(RunCommand("cd " + dir_ + " && timeout 20 " + std::string(FEDTUNE_COORDINATOR_BIN) +
                           " serve --config coordinator2.toml",
                       &out),
            0);
  EXPECT_NE(out.find("cannot listen on 127.0.0.1:" + std::to_string(port_)), std::string::npos) << out;

  // A site.toml whose id is not its certificate's CN: refused at start.
  {
    std::ifstream in(dir_ + "/hospital-a/site.toml");
    std::string toml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string from = "pki/site/hospital-a.";
    for (size_t at = toml.find(from); at != std::string::npos; at = toml.find(from)) {
      toml.replace(at, from.size(), "pki/site/hospital-b.");
    }
    std::ofstream(dir_ + "/hospital-a/site-wrong-cert.toml") << toml;
  }
  EXPECT_EQ(RunCommand("cd " + dir_ + "/hospital-a && timeout 20 " + std::string(FEDTUNE_SITE_BIN) +
                           " run --config site-wrong-cert.toml",
                       &out),
            1);
  EXPECT_NE(out.find("site.toml says [site] id = \"hospital-a\" but the certificate"), std::string::npos) << out;

  // One live session per site identity.
  auto creds = net::MakeClientCredentials(Files("pki/site/hospital-c"));
  ASSERT_TRUE(creds.ok());
  auto site_c = v1::Federation::NewStub(grpc::CreateChannel(Address(), *creds));
  auto join = [&](const std::string& session) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::JoinRequest req;
    req.set_session_id(session);
    v1::JoinResponse resp;
    return site_c->Join(&ctx, req, &resp);
  };
  ASSERT_TRUE(join("first").ok());
  grpc::Status second = join("second");
  EXPECT_EQ(second.error_code(), grpc::StatusCode::ALREADY_EXISTS) << second.error_message();
  auto poll = [&](const std::string& session) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("fedtune-session", session);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::PollTaskResponse resp;
    return site_c->PollTask(&ctx, v1::PollTaskRequest(), &resp);
  };
  EXPECT_TRUE(poll("first").ok());
  EXPECT_EQ(poll("second").error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  // Roles: bob is a viewer (reads, cannot submit); carol is on no list.
  auto admin_stub = [&](const std::string& name) {
    auto c = net::MakeClientCredentials(Files("pki/admin/" + name));
    EXPECT_TRUE(c.ok());
    return v1::Admin::NewStub(grpc::CreateChannel(Address(), *c));
  };
  auto bob = admin_stub("bob");
  auto carol = admin_stub("carol");
  {
    grpc::ClientContext ctx;
    v1::ListJobsResponse resp;
    EXPECT_TRUE(bob->ListJobs(&ctx, v1::ListJobsRequest(), &resp).ok());
    grpc::ClientContext ctx2;
    v1::SubmitJobRequest req;
    req.set_job_toml(JobToml(1, 1, 60));
    v1::SubmitJobResponse r2;
    grpc::Status st = bob->SubmitJob(&ctx2, req, &r2);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED);
    EXPECT_NE(st.error_message().find("is a viewer"), std::string::npos) << st.error_message();
    grpc::ClientContext ctx3;
    EXPECT_EQ(carol->ListJobs(&ctx3, v1::ListJobsRequest(), &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }

  // hospital-c revoked while the coordinator runs: refused from a later call
  // on, without a restart (the coordinator re-reads the CRL file).
  ASSERT_EQ(RunCommand("cd " + dir_ + " && " + std::string(FEDTUNE_SOURCE_DIR) +
                           "/certs/fedtune-certs revoke pki site hospital-c",
                       &out),
            0)
      << out;
  grpc::Status refused;
  for (int i = 0; i < 150; ++i) {
    refused = poll("first");
    if (refused.error_code() == grpc::StatusCode::PERMISSION_DENIED) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED) << refused.error_message();
  EXPECT_NE(refused.error_message().find("is revoked"), std::string::npos) << refused.error_message();
}

// SIGTERM stops an idle daemon at once, although the coordinator holds its
// poll for up to poll_timeout_s (45 s here).
TEST_F(Federation, AnIdleSiteStopsAtOnceOnSigterm) {
  testing::CoordinatorToml toml;
  toml.port = port_;
  toml.enrolled = kSites;
  toml.operators = {"alice"};
  toml.poll_timeout_s = 45;
  std::ofstream(dir_ + "/coordinator.toml") << toml.Text();
  StartCoordinator();
  StartSite("hospital-a");
  WaitSitesConnected(1);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // its poll is now held
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(sites_["hospital-a"].Stop(std::chrono::seconds(90)), 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(seconds, 20) << "the idle site took " << seconds << " s to stop (the poll was not cancelled)";
  std::cout << "[idle-stop] the idle site stopped " << seconds << " s after SIGTERM\n";
  std::ifstream log(dir_ + "/hospital-a.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("stopping"), std::string::npos) << "the site did not log that it is stopping";
}

TEST_F(Federation, SiteKilledMidRoundRoundClosesWithQuorumAndTheSiteRejoins) {
  StartCoordinator();
  for (const auto& s : kSites) StartSite(s);
  WaitSitesConnected(3);
  const std::string job = Submit(JobToml(3, 2, 20));
  // Kill hospital-c as soon as it holds its round-2 task.
  WaitJob(job, [](const v1::JobStatus& s) { return SiteState(s, 2, "hospital-c") == "running" || Finished(s); });
  sites_["hospital-c"].Kill9();
  const v1::JobStatus r2 = WaitJob(job, [](const v1::JobStatus& s) { return s.rounds_done() >= 2 || Finished(s); });
  EXPECT_EQ(SiteState(r2, 2, "hospital-c"), "timed_out") << r2.ShortDebugString();
  StartSite("hospital-c");
  const v1::JobStatus st = WaitJob(job, Finished, 180);
  ASSERT_EQ(st.state(), v1::JOB_STATE_SUCCEEDED) << st.reason();
  EXPECT_EQ(st.rounds_done(), 3);
  EXPECT_EQ(SiteState(st, 1, "hospital-c"), "accepted");
  EXPECT_EQ(SiteState(st, 2, "hospital-c"), "timed_out");
  EXPECT_EQ(SiteState(st, 3, "hospital-c"), "accepted") << "the restarted site takes part in the next round";
  int accepted_r2 = 0;
  for (const auto& s : st.rounds(1).sites()) accepted_r2 += s.state() == "accepted";
  EXPECT_EQ(accepted_r2, 2);
}

TEST_F(Federation, CoordinatorKilledMidRoundRestartsAndRecordsEachRoundOnce) {
  StartCoordinator();
  for (const auto& s : kSites) StartSite(s);
  const std::string job = Submit(JobToml(3, 3, 60));
  // An operator follows the job across the restart (global options after
  // the command, as habit has it).
  ChildProcess watch({FEDTUNE_CLI_BIN, "job", "watch", job, "--json", "--coordinator", Address(), "--ca",
                      dir_ + "/pki/ca.pem", "--cert", dir_ + "/pki/admin/alice.pem", "--key",
                      dir_ + "/pki/admin/alice.key"},
                     dir_ + "/watch.log");
  // kill -9 once the first round-2 update has been accepted but not all.
  WaitJob(job, [](const v1::JobStatus& s) {
    int accepted = 0;
    for (const auto& r : s.rounds())
      if (r.round() == 2)
        for (const auto& t : r.sites()) accepted += t.state() == "accepted";
    return accepted >= 1 || Finished(s);
  });
  coordinator_.Kill9();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  StartCoordinator();
  const v1::JobStatus st = WaitJob(job, Finished, 240);
  ASSERT_EQ(st.state(), v1::JOB_STATE_SUCCEEDED) << st.reason();
  std::map<int, int> aggregated;
  for (const auto& r : st.rounds()) aggregated[r.round()] += r.state() == "aggregated";
  EXPECT_EQ(aggregated[1], 1);
  EXPECT_EQ(aggregated[2], 1);
  EXPECT_EQ(aggregated[3], 1);
  EXPECT_EQ(st.rounds_done(), 3);
  for (int v = 0; v <= 3; ++v) {
    EXPECT_TRUE(fs::exists(dir_ + "/state/blobs/" + job + "/global-v" + std::to_string(v) + ".safetensors")) << v;
  }
  EXPECT_FALSE(fs::exists(dir_ + "/state/blobs/" + job + "/global-v4.safetensors"));
  // The watch reconnected, resumed after the last event it had printed
  // (each event once) and exited 0 for a job that succeeded.
  EXPECT_EQ(watch.Wait(std::chrono::seconds(60)), 0) << "see " << dir_ << "/watch.log";
  std::ifstream in(dir_ + "/watch.log");
  std::set<int64_t> seqs;
  int events = 0, finished = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line.front() != '{') continue;
    const auto e = nlohmann::json::parse(line);
    ++events;
    seqs.insert(e.value("seq", int64_t{0}));
    finished += e.value("kind", std::string()) == "job_finished";
  }
  EXPECT_GT(events, 10);
  EXPECT_EQ(seqs.size(), static_cast<size_t>(events)) << "an event was printed twice";
  EXPECT_EQ(finished, 1);
}

TEST_F(Federation, SitesRefuseAJobWhoseBackboneDiffersAndSayWhy) {
  StartCoordinator();
  for (const auto& s : kSites) StartSite(s);
  const std::string job = Submit(JobToml(1, 3, 60, std::string(64, 'b')));
  const v1::JobStatus st = WaitJob(job, Finished);
  EXPECT_EQ(st.state(), v1::JOB_STATE_FAILED);
  ASSERT_GE(st.rounds_size(), 1);
  ASSERT_EQ(st.rounds(0).sites_size(), 3);
  for (const auto& s : st.rounds(0).sites()) {
    EXPECT_EQ(s.state(), "failed");
    EXPECT_NE(s.reason().find("backbone mismatch"), std::string::npos) << s.reason();
  }
}

// One daemon per hospital: with [scp] enabled, `fedtune-site run` also
// receives from the PACS, and what arrives is ingested while it is federated.
TEST_F(Federation, SiteDaemonAlsoReceivesFromThePacs) {
  std::string out;
  if (RunCommand("command -v storescu", &out) != 0) {
    GTEST_SKIP() << "dcmtk's storescu is not installed (deploy/install-deps.sh installs dcmtk)";
  }
  const std::string sd = dir_ + "/hospital-a";
  const std::string site_bin = FEDTUNE_SITE_BIN;
  // Images in the workspace; `shareable`: summed as the coordinator sees them
  // (a split below k is null in the JSON and counts -1 here).
  auto images = [&](bool shareable = false) {
    std::string stats;
    if (RunCommand(site_bin + " stats --json " + (shareable ? "--shareable " : "") + "--config " + sd +
                       "/site.toml 2>/dev/null",
                   &stats) != 0) {
      return -1;
    }
    const nlohmann::json parsed = nlohmann::json::parse(stats);  // outlives the loop over its items
    int n = 0;
    for (const auto& [name, split] : parsed["splits"].items()) {
      n += split["images"].is_null() ? -1 : split["images"].get<int>();
    }
    return n;
  };
  const int before = images();
  const int shared_before = images(true);
  ASSERT_GT(before, 0);
  const int dicom_port = testing::FreeLoopbackPort();
  std::ofstream(sd + "/site.toml", std::ios::app)
      << "[scp]\nenabled = true\nport = " << dicom_port << "\nallowed_calling_aes = [\"PACS\"]\n";
  ASSERT_EQ(RunCommand(site_bin + " synth --out " + sd + "/arrivals --site arrivals --patients 3 --size 96 --seed 9",
                       &out),
            0)
      << out;
  int sent = 0;
  for (const auto& e : fs::directory_iterator(sd + "/arrivals")) sent += e.path().extension() == ".dcm";
  StartCoordinator();
  StartSite("hospital-a");
  WaitSitesConnected(1);
  ASSERT_EQ(RunCommand("storescu -aet PACS -aec FEDTUNE 127.0.0.1 " + std::to_string(dicom_port) + " " + sd +
                           "/arrivals/*.dcm",
                       &out),
            0)
      << out;
  // Ingested on arrival, while the daemon runs.
  int now = before;
  for (int i = 0; i < 200 && now != before + sent; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    now = images();
  }
  EXPECT_EQ(now, before + sent) << "see " << dir_ << "/hospital-a.log";
  // The coordinator learns the new counts without a restart (the daemon joins again).
  const int shared = images(true);
  ASSERT_NE(shared, shared_before);  // so the coordinator's list can only match after a new join
  int64_t listed = 0;
  for (int i = 0; i < 200 && listed != shared; ++i) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListSitesResponse resp;
    if (admin_->ListSites(&ctx, v1::ListSitesRequest(), &resp).ok()) {
      for (const auto& site : resp.sites()) {
        if (site.site_id() != "hospital-a") continue;
        listed = 0;
        for (const auto& split : site.dataset().splits()) listed += split.images();
      }
    }
    if (listed != shared) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(listed, shared) << "the coordinator still lists the dataset summary from before the arrivals";
  EXPECT_EQ(sites_["hospital-a"].Stop(), 0);
}

}  // namespace
}  // namespace fedtune
