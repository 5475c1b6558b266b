// round_overhead: the time a federated round spends outside local training —
// dispatch, weight transfer, validation, aggregation and persistence — with a
// real fedtune-coordinator process (mutual TLS, SQLite, fsync'd versions) and
// N lightweight sites. Each site is a thread with its own TLS connection and
// its own certificate that returns a prepared update at once (global weights
// plus a site-specific offset), so the round time is all overhead.
//
// Model: ViT-B/16 (mae-base/16) LoRA r=16 on query+value + 17-finding
// CLS+mean head. Reference measured in the same run: the same N updates
// parsed, validated, aggregated (FedAvg) and written in one process, without
// network or database.
//
//   round_overhead --sites 3,10,50 --rounds 3 [--secure] [--work DIR]
//
// --secure also runs each case with [privacy] secure_aggregation = true (the
// sites run the SecAgg+ key exchange, mask their update difference and
// reveal their shares through the coordinator) and compares the two.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/core/status.h"
#include "common/fl/strategy.h"
#include "common/fl/update_validation.h"
#include "common/secagg/protocol.h"
#include "common/secagg/wire.h"
#include "common/net/tls.h"
#include "fedtune/v1/admin.grpc.pb.h"
#include "fedtune/v1/federation.grpc.pb.h"
#include "tests/testing/free_port.h"
#include "tests/testing/process.h"
#include "tests/testing/run_command.h"

namespace fedtune {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;


// Adds `delta` to every float32 value of a safetensors image.
absl::StatusOr<std::string> Shift(const std::string& global, float delta) {
  ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::FromBytes(global));
  TensorMap m = f.ReadAll();
  for (auto& [name, t] : m) {
    auto* v = reinterpret_cast<float*>(t.data.data());
    for (size_t i = 0; i < t.data.size() / 4; ++i) v[i] += delta;
  }
  return SerializeSafetensors(m);
}

struct SiteCounters {
  std::atomic<int64_t> bytes_down{0}, bytes_up{0}, tasks{0};
};

// One key-exchange stage, asked until ready.
absl::StatusOr<v1::SecAggResponse> Exchange(v1::Federation::Stub& stub, const std::string& session,
                                            const v1::SecAggRequest& req, const std::atomic<bool>* stop) {
  while (!*stop) {
    grpc::ClientContext c;
    c.AddMetadata("fedtune-session", session);
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::SecAggResponse r;
    grpc::Status s = stub.SecureAggregation(&c, req, &r);
    if (!s.ok()) return net::FromGrpc(s);
    if (r.ready()) return r;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::CancelledError("stopping");
}

// A secure site's part of a round up to its masked vector: returns the
// session (for the reveal) and the masked bytes of weight x delta.
absl::StatusOr<std::pair<std::unique_ptr<secagg::SiteSession>, std::string>> SecureMasked(
    v1::Federation::Stub& stub, const std::string& session, const v1::Task& task, const net::TlsFiles& files,
    const std::string& site, float delta, const std::atomic<bool>* stop) {
  const auto& cfg = task.train().secure_aggregation();
  ASSIGN_OR_RETURN(std::string cert, ReadFileBytes(files.cert_pem));
  ASSIGN_OR_RETURN(std::string key, ReadFileBytes(files.key_pem));
  ASSIGN_OR_RETURN(std::string ca, ReadFileBytes(files.ca_pem));
  ASSIGN_OR_RETURN(std::unique_ptr<secagg::SiteSession> s,
                   secagg::SiteSession::Start(site, secagg::ParamsOf(task.job_id(), task.round(), cfg), cert,
                                              [&key](std::string_view m) { return secagg::Sign(key, m); }));
  v1::SecAggRequest req;
  req.set_task_id(task.task_id());
  req.set_stage(v1::SEC_AGG_STAGE_ADVERTISE);
  *req.mutable_keys() = secagg::ToWire(s->advertisement());
  ASSIGN_OR_RETURN(v1::SecAggResponse roster, Exchange(stub, session, req, stop));
  std::vector<secagg::Advertisement> ads;
  for (const auto& k : roster.roster()) {
    ASSIGN_OR_RETURN(secagg::Advertisement a, secagg::FromWire(k));
    ads.push_back(std::move(a));
  }
  ASSIGN_OR_RETURN(std::vector<secagg::SealedShares> shares,
                   s->ShareKeys(ads, [&ca](const std::string& id, const std::string& c, std::string_view m,
                                           std::string_view sig) { return secagg::VerifySigned(ca, c, id, m, sig); }));
  req.Clear();
  req.set_task_id(task.task_id());
  req.set_stage(v1::SEC_AGG_STAGE_SHARE);
  for (const auto& x : shares) *req.add_shares() = secagg::ToWire(x);
  ASSIGN_OR_RETURN(v1::SecAggResponse shared, Exchange(stub, session, req, stop));
  std::vector<secagg::SealedShares> received;
  for (const auto& x : shared.shares()) received.push_back(secagg::FromWire(x));
  const std::vector<float> difference(static_cast<size_t>(cfg.length()), delta);
  ASSIGN_OR_RETURN(std::vector<uint32_t> masked,
                   s->Mask(received, std::vector<std::string>(shared.sites().begin(), shared.sites().end()),
                           secagg::Encode(difference, cfg.weight(), cfg.bound())));
  return std::make_pair(std::move(s), secagg::VectorBytes(masked));
}

absl::Status SecureReveal(v1::Federation::Stub& stub, const std::string& session, const v1::Task& task,
                          secagg::SiteSession& s, const std::atomic<bool>* stop) {
  v1::SecAggRequest req;
  req.set_task_id(task.task_id());
  req.set_stage(v1::SEC_AGG_STAGE_MASKED_SITES);
  ASSIGN_OR_RETURN(v1::SecAggResponse in_sum, Exchange(stub, session, req, stop));
  ASSIGN_OR_RETURN(secagg::Reveal reveal, s.Unmask(std::vector<std::string>(in_sum.sites().begin(), in_sum.sites().end())));
  req.Clear();
  req.set_task_id(task.task_id());
  req.set_stage(v1::SEC_AGG_STAGE_REVEAL);
  secagg::ToWire(reveal, &req);
  return Exchange(stub, session, req, stop).status();
}

void RunSite(const std::string& address, const net::TlsFiles& files, int index, const std::atomic<bool>* stop,
             SiteCounters* counters) {
  auto creds = net::MakeClientCredentials(files);
  if (!creds.ok()) {
    std::cerr << creds.status() << "\n";
    return;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  auto stub = v1::Federation::NewStub(grpc::CreateCustomChannel(address, *creds, args));
  // A real site declares its backbone, findings and training images (the
  // coordinator checks jobs and num_examples against them) and names its
  // session on every call.
  v1::JoinRequest join;
  const std::string session = absl::StrCat("bench-session-", index, "-0123456789abcdef");
  join.set_session_id(session);
  join.mutable_capabilities()->set_backbone_sha256(std::string(64, '0'));
  for (int i = 0; i < 17; ++i) join.mutable_dataset()->add_findings(absl::StrCat("finding-", i));
  auto* train = join.mutable_dataset()->add_splits();
  train->set_split("train");
  train->set_images(1000);
  auto tag = [&](grpc::ClientContext* c) { c->AddMetadata("fedtune-session", session); };
  while (!*stop) {
    grpc::ClientContext jc;
    jc.set_wait_for_ready(true);
    jc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::JoinResponse jr;
    if (!stub->Join(&jc, join, &jr).ok()) continue;
    while (!*stop) {
      grpc::ClientContext pc;
      tag(&pc);
      pc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      v1::PollTaskResponse pr;
      if (!stub->PollTask(&pc, v1::PollTaskRequest(), &pr).ok()) break;
      if (!pr.has_task()) continue;
      const v1::Task& task = pr.task();
      v1::UpdateHeader h;
      h.set_task_id(task.task_id());
      h.set_job_id(task.job_id());
      h.set_round(task.round());
      std::string update;
      std::unique_ptr<secagg::SiteSession> secure;
      if (task.has_train()) {
        grpc::ClientContext fc;
        tag(&fc);
        v1::FetchWeightsRequest fr;
        fr.set_task_id(task.task_id());
        *fr.mutable_weights() = task.train().weights();
        auto reader = stub->FetchWeights(&fc, fr);
        std::string bytes;
        v1::WeightsChunk c;
        while (reader->Read(&c)) bytes += c.data();
        if (!reader->Finish().ok()) break;
        counters->bytes_down += static_cast<int64_t>(bytes.size());
        auto shifted = Shift(bytes, 1e-4f * static_cast<float>(index + 1));
        if (!shifted.ok()) break;
        update = std::move(*shifted);
        if (task.train().has_secure_aggregation()) {
          // As a real site: the weights fetched (and trained), then the
          // difference (here the site's offset) masked instead of sent.
          auto masked = SecureMasked(*stub, session, task, files, absl::StrCat("site-", index),
                                     1e-4f * static_cast<float>(index + 1), stop);
          if (!masked.ok()) {
            std::cerr << "site-" << index << ": " << masked.status() << "\n";
            break;
          }
          secure = std::move(masked->first);
          update = std::move(masked->second);
        }
        h.set_num_examples(100 + index);
        h.set_total_size(static_cast<int64_t>(update.size()));
        h.set_sha256(Sha256Hex(update));
      } else {
        h.mutable_evaluation()->set_examples(1);
      }
      grpc::ClientContext sc;
      tag(&sc);
      v1::SubmitUpdateResponse sr;
      auto writer = stub->SubmitUpdate(&sc, &sr);
      v1::UpdateChunk hc;
      *hc.mutable_header() = h;
      writer->Write(hc);
      for (size_t off = 0; off < update.size(); off += 1 << 20) {
        v1::UpdateChunk dc;
        dc.set_data(update.substr(off, 1 << 20));
        writer->Write(dc);
      }
      writer->WritesDone();
      if (!writer->Finish().ok()) break;
      if (secure) {
        if (auto st = SecureReveal(*stub, session, task, *secure, stop); !st.ok()) {
          std::cerr << "site-" << index << ": " << st << "\n";
          break;
        }
      }
      counters->bytes_up += static_cast<int64_t>(update.size());
      ++counters->tasks;
    }
  }
}

struct Result {
  int sites = 0;
  std::vector<double> round_seconds;
  double bytes_down_per_site_round = 0, bytes_up_per_site_round = 0;
  double reference_seconds = 0;
};

absl::StatusOr<Result> RunCase(const std::string& work, int sites, int rounds, bool secure) {
  const std::string dir = absl::StrCat(work, "/sites-", sites);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string certs = std::string(FEDTUNE_SOURCE_DIR) + "/certs/fedtune-certs";
  std::string script = certs + " init-ca pki && " + certs + " coordinator pki && " + certs + " admin pki bench";
  std::vector<std::string> ids;
  for (int i = 0; i < sites; ++i) {
    ids.push_back(absl::StrCat("site-", i));
    script += " && " + certs + " site pki " + ids.back();
  }
  std::string out;
  if (testing::RunCommand("cd " + dir + " && (" + script + ")", &out) != 0) return absl::InternalError(out);
  const int port = testing::FreeLoopbackPort();
  const std::string address = absl::StrCat("127.0.0.1:", port);
  std::ofstream(dir + "/coordinator.toml")
      << "[coordinator]\nlisten = \"" << address << "\"\nstate_dir = \"state\"\npoll_timeout_s = 5\n"
      << "[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/coordinator/coordinator.pem\"\nkey = "
         "\"pki/coordinator/coordinator.key\"\ncrl = \"none\"\n[sites]\nenrolled = [\""
      << absl::StrJoin(ids, "\", \"") << "\"]\n[admins]\noperators = [\"bench\"]\n[log]\nlevel = \"warn\"\n";
  testing::ChildProcess coordinator({FEDTUNE_COORDINATOR_BIN, "serve", "--config", "coordinator.toml"},
                                    dir + "/coordinator.log", dir);
  std::atomic<bool> stop{false};
  std::vector<SiteCounters> counters(static_cast<size_t>(sites));
  std::vector<std::thread> threads;
  for (int i = 0; i < sites; ++i) {
    const std::string stem = dir + "/pki/site/" + ids[static_cast<size_t>(i)];
    threads.emplace_back(RunSite, address, net::TlsFiles{dir + "/pki/ca.pem", stem + ".pem", stem + ".key", ""}, i,
                         &stop, &counters[static_cast<size_t>(i)]);
  }
  auto admin_creds = net::MakeClientCredentials(
      {dir + "/pki/ca.pem", dir + "/pki/admin/bench.pem", dir + "/pki/admin/bench.key", ""});
  if (!admin_creds.ok()) return admin_creds.status();
  auto admin = v1::Admin::NewStub(grpc::CreateChannel(address, *admin_creds));
  // Wait until every site has joined.
  for (int i = 0; i < 600; ++i) {
    grpc::ClientContext c;
    c.set_wait_for_ready(true);
    c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListSitesResponse r;
    if (admin->ListSites(&c, v1::ListSitesRequest(), &r).ok() &&
        std::count_if(r.sites().begin(), r.sites().end(), [](const auto& s) { return s.connected(); }) == sites) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::string job_toml = absl::StrCat(
      "[job]\nname = \"round-overhead\"\nrounds = ", rounds, "\nmin_sites = ", sites,
      "\nround_deadline_s = 600\n[backbone]\narchitecture = \"mae-base/16\"\nsha256 = \"", std::string(64, '0'),
      "\"\n[model]\nfindings = [", [] {
        std::vector<std::string> f;
        for (int i = 0; i < 17; ++i) f.push_back(absl::StrCat("\"finding-", i, "\""));
        return absl::StrJoin(f, ", ");
      }(),
      "]\n[model.lora]\nrank = 16\ntargets = [\"query\", \"value\"]\n",
      secure ? "[privacy]\nsecure_aggregation = true\n" : "");
  grpc::ClientContext sc;
  v1::SubmitJobRequest sreq;
  sreq.set_job_toml(job_toml);
  v1::SubmitJobResponse sresp;
  if (auto s = admin->SubmitJob(&sc, sreq, &sresp); !s.ok()) return net::FromGrpc(s);
  // Round times from the coordinator's own events.
  grpc::ClientContext wc;
  v1::WatchJobRequest wreq;
  wreq.set_job_id(sresp.job_id());
  auto reader = admin->WatchJob(&wc, wreq);
  std::map<int, int64_t> started, aggregated;
  v1::JobEvent e;
  v1::JobState final_state = v1::JOB_STATE_UNSPECIFIED;
  while (reader->Read(&e)) {
    if (e.kind() == "round_started") started[e.round()] = e.unix_ms();
    if (e.kind() == "round_aggregated") aggregated[e.round()] = e.unix_ms();
    if (e.kind() == "job_finished") final_state = e.job_state();
  }
  (void)reader->Finish();
  stop = true;
  for (auto& t : threads) t.join();
  coordinator.Stop();
  if (final_state != v1::JOB_STATE_SUCCEEDED) return absl::InternalError("the job did not succeed; see " + dir);
  Result r;
  r.sites = sites;
  for (const auto& [round, t] : aggregated) r.round_seconds.push_back((t - started[round]) / 1000.0);
  int64_t down = 0, up = 0;
  for (const auto& c : counters) {
    down += c.bytes_down;
    up += c.bytes_up;
  }
  r.bytes_down_per_site_round = static_cast<double>(down) / (sites * rounds);
  r.bytes_up_per_site_round = static_cast<double>(up) / (sites * rounds);

  // Reference: the same work in one process, no network, no database.
  const std::string g0 = dir + "/state/blobs/" + sresp.job_id() + "/global-v0.safetensors";
  auto global_bytes = ReadFileBytes(g0);
  if (!global_bytes.ok()) return global_bytes.status();
  std::vector<std::string> updates;
  for (int i = 0; i < sites; ++i) {
    ASSIGN_OR_RETURN(std::string u, Shift(*global_bytes, 1e-4f * static_cast<float>(i + 1)));
    updates.push_back(std::move(u));
  }
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(SafetensorsFile gf, SafetensorsFile::FromBytes(*global_bytes));
  const TensorMap global = gf.ReadAll();
  fl::FedAvg avg;
  RETURN_IF_ERROR(avg.Begin(global, {}));
  for (int i = 0; i < sites; ++i) {
    (void)Sha256Hex(updates[static_cast<size_t>(i)]);
    ASSIGN_OR_RETURN(SafetensorsFile uf, SafetensorsFile::FromBytes(updates[static_cast<size_t>(i)]));
    const TensorMap u = uf.ReadAll();
    RETURN_IF_ERROR(fl::ValidateUpdate(global, u, {}));
    RETURN_IF_ERROR(avg.Add(ids[static_cast<size_t>(i)], u, 100 + i));
  }
  ASSIGN_OR_RETURN(fl::Aggregate next, avg.Finish());
  RETURN_IF_ERROR(WriteSafetensors(dir + "/reference.safetensors", next.global));
  r.reference_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  fs::remove_all(dir);
  return r;
}

}  // namespace
}  // namespace fedtune

int main(int argc, char** argv) {
  std::string sites_arg = "3,10,50", work = "/tmp/fedtune-round-overhead";
  int rounds = 3;
  bool secure = false;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--secure") {
      secure = true;
    } else if (i + 1 < argc && k == "--sites") {
      sites_arg = argv[++i];
    } else if (i + 1 < argc && k == "--rounds") {
      rounds = std::atoi(argv[++i]);
    } else if (i + 1 < argc && k == "--work") {
      work = argv[++i];
    } else {
      std::cerr << "usage: round_overhead [--sites 3,10,50] [--rounds 3] [--secure] [--work DIR]\n";
      return 2;
    }
  }
  if (secure) {
    std::cout << "| sites | FedAvg round s (median, min-max of " << rounds << ") | secure round s (median, min-max) "
              << "| secure / FedAvg | per site per round, MB down / up: FedAvg | secure |\n|---:|---:|---:|---:|---:|---:|\n";
  } else {
    std::cout << "| sites | round time s (median, min-max of " << rounds
              << ") | per site per round: down MB / up MB | reference in-process s | round / reference |\n"
              << "|---:|---:|---:|---:|---:|\n";
  }
  auto median_of = [](std::vector<double> t) {
    std::sort(t.begin(), t.end());
    return std::make_tuple(t[t.size() / 2], t.front(), t.back());
  };
  for (absl::string_view s : absl::StrSplit(sites_arg, ',')) {
    const int n = std::atoi(std::string(s).c_str());
    auto r = fedtune::RunCase(work, n, rounds, false);
    if (!r.ok()) {
      std::cerr << "sites=" << n << ": " << r.status() << "\n";
      return 1;
    }
    const auto [median, lo, hi] = median_of(r->round_seconds);
    if (!secure) {
      std::printf("| %d | %.3f (%.3f-%.3f) | %.2f / %.2f | %.3f | %.1fx |\n", n, median, lo, hi,
                  r->bytes_down_per_site_round / 1e6, r->bytes_up_per_site_round / 1e6, r->reference_seconds,
                  median / r->reference_seconds);
    } else {
      auto q = fedtune::RunCase(work, n, rounds, true);
      if (!q.ok()) {
        std::cerr << "sites=" << n << " (secure): " << q.status() << "\n";
        return 1;
      }
      const auto [smedian, slo, shi] = median_of(q->round_seconds);
      std::printf("| %d | %.3f (%.3f-%.3f) | %.3f (%.3f-%.3f) | %.2fx | %.2f / %.2f | %.2f / %.2f |\n", n, median, lo,
                  hi, smedian, slo, shi, smedian / median, r->bytes_down_per_site_round / 1e6,
                  r->bytes_up_per_site_round / 1e6, q->bytes_down_per_site_round / 1e6,
                  q->bytes_up_per_site_round / 1e6);
    }
    std::fflush(stdout);
  }
  return 0;
}
