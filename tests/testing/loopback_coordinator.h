// A real fedtune-coordinator on loopback for integration tests: the
// federation's certificates from certs/fedtune-certs, a coordinator.toml, the
// `serve` process and an operator's Admin channel to it. FEDTUNE_SOURCE_DIR
// and FEDTUNE_COORDINATOR_BIN come from CMake.
#pragma once

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/net/tls.h"
#include "fedtune/v1/admin.grpc.pb.h"
#include "tests/testing/process.h"
#include "tests/testing/run_command.h"

namespace fedtune::testing {

// certs/fedtune-certs needs openssl; tests that use it skip without.
inline bool HaveOpenssl() { return std::system("command -v openssl >/dev/null 2>&1") == 0; }

// Creates `dir`/pki: the CA and its CRL, the coordinator's certificate, one
// admin certificate per `admins` and one site certificate per `sites`.
// Returns the script's exit status, its output in *output.
inline int MakeFederationPki(const std::string& dir, const std::vector<std::string>& admins,
                             const std::vector<std::string>& sites, std::string* output) {
  const std::string certs = std::string(FEDTUNE_SOURCE_DIR) + "/certs/fedtune-certs";
  std::string script = certs + " init-ca pki && " + certs + " coordinator pki";
  for (const auto& a : admins) script += " && " + certs + " admin pki " + a;
  for (const auto& s : sites) script += " && " + certs + " site pki " + s;
  return RunCommand("cd " + dir + " && (" + script + ")", output);
}

// The files of one party under `dir`/pki; `stem` is e.g. "site/hospital-a".
inline net::TlsFiles PkiFiles(const std::string& dir, const std::string& stem) {
  return {dir + "/pki/ca.pem", dir + "/pki/" + stem + ".pem", dir + "/pki/" + stem + ".key", ""};
}

// coordinator.toml for a coordinator on 127.0.0.1:`port` that keeps its
// state in state/ and trusts the PKI of MakeFederationPki (paths relative to
// the file, which lives next to pki/).
struct CoordinatorToml {
  int port = 0;
  std::vector<std::string> enrolled;
  std::vector<std::string> operators;
  std::vector<std::string> viewers;
  int poll_timeout_s = 2;
  int site_timeout_s = 60;
  std::string crl = "pki/crl.pem";    // or "none"
  std::string more_coordinator_keys;  // further [coordinator] lines, each ending in \n

  std::string Text() const {
    auto list = [](const std::vector<std::string>& v) {
      std::string out;
      for (const auto& s : v) out += (out.empty() ? "\"" : ", \"") + s + "\"";
      return "[" + out + "]";
    };
    return "[coordinator]\nlisten = \"127.0.0.1:" + std::to_string(port) +
           "\"\nstate_dir = \"state\"\npoll_timeout_s = " + std::to_string(poll_timeout_s) +
           "\nsite_timeout_s = " + std::to_string(site_timeout_s) + "\n" + more_coordinator_keys +
           "[tls]\nca = \"pki/ca.pem\"\ncert = \"pki/coordinator/coordinator.pem\"\n"
           "key = \"pki/coordinator/coordinator.key\"\ncrl = \"" +
           crl + "\"\n[sites]\nenrolled = " + list(enrolled) + "\n[admins]\noperators = " + list(operators) + "\n" +
           (viewers.empty() ? std::string() : "viewers = " + list(viewers) + "\n");
  }
};

// Starts `fedtune-coordinator serve --config coordinator.toml` in `dir`
// (output appended to dir/coordinator.log) and waits until its Admin API
// answers `admin` on `address`. *admin_stub is a fresh channel to it.
inline ::testing::AssertionResult StartCoordinator(const std::string& dir, const std::string& address,
                                                   const net::TlsFiles& admin, ChildProcess* process,
                                                   std::unique_ptr<v1::Admin::Stub>* admin_stub) {
  *process =
      ChildProcess({FEDTUNE_COORDINATOR_BIN, "serve", "--config", "coordinator.toml"}, dir + "/coordinator.log", dir);
  if (process->pid() <= 0) return ::testing::AssertionFailure() << "cannot start " << FEDTUNE_COORDINATOR_BIN;
  auto creds = net::MakeClientCredentials(admin);
  if (!creds.ok()) return ::testing::AssertionFailure() << creds.status();
  *admin_stub = v1::Admin::NewStub(grpc::CreateChannel(address, *creds));
  for (int i = 0; i < 60; ++i) {
    grpc::ClientContext ctx;
    ctx.set_wait_for_ready(true);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    v1::ListSitesResponse resp;
    if ((*admin_stub)->ListSites(&ctx, v1::ListSitesRequest(), &resp).ok()) return ::testing::AssertionSuccess();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return ::testing::AssertionFailure() << "the coordinator did not come up; see " << dir << "/coordinator.log";
}

// Waits until at least `n` sites are connected.
inline ::testing::AssertionResult WaitSitesConnected(v1::Admin::Stub& admin, int n, int seconds = 30) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < until) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListSitesResponse resp;
    if (admin.ListSites(&ctx, v1::ListSitesRequest(), &resp).ok() &&
        std::count_if(resp.sites().begin(), resp.sites().end(), [](const auto& s) { return s.connected(); }) >= n) {
      return ::testing::AssertionSuccess();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return ::testing::AssertionFailure() << n << " sites did not connect";
}

// A job's status, or nullopt when the coordinator does not answer (it may be
// down on purpose).
inline std::optional<v1::JobStatus> GetJobStatus(v1::Admin::Stub& admin, const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_wait_for_ready(true);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GetJobRequest req;
  req.set_job_id(id);
  v1::JobStatus st;
  if (!admin.GetJob(&ctx, req, &st).ok()) return std::nullopt;
  return st;
}

inline bool JobFinished(const v1::JobStatus& s) {
  return s.state() == v1::JOB_STATE_SUCCEEDED || s.state() == v1::JOB_STATE_FAILED ||
         s.state() == v1::JOB_STATE_CANCELLED;
}

// Polls the job until `done` holds; on timeout adds a failure and returns
// the last state seen.
inline v1::JobStatus WaitForJob(v1::Admin::Stub& admin, const std::string& id,
                                const std::function<bool(const v1::JobStatus&)>& done, int seconds = 120) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  v1::JobStatus last;
  while (std::chrono::steady_clock::now() < until) {
    if (auto st = GetJobStatus(admin, id)) {
      last = *st;
      if (done(last)) return last;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ADD_FAILURE() << "timed out waiting for job " << id << "; last state " << last.ShortDebugString();
  return last;
}

}  // namespace fedtune::testing
