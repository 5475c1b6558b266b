#include "coordinator/cli/cli_common.h"

#include <grpcpp/grpcpp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <thread>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/fl/task_spec.h"
#include "common/model/classifier.h"
#include "common/net/tls.h"
#include "coordinator/engine/job_spec.h"
#include "coordinator/cli/proto_json.h"
#include "coordinator/report/report.h"
#include "fedtune/v1/admin.grpc.pb.h"

namespace fedtune::cli {

// The first executable `name` on PATH (like `command -v`).
bool Which(const std::string& name, std::string* path) {
  const char* env = std::getenv("PATH");
  for (absl::string_view dir : absl::StrSplit(env ? env : "/usr/bin:/bin", ':')) {
    if (dir.empty()) continue;
    const std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) {
      *path = candidate;
      return true;
    }
  }
  return false;
}

int Fail(const std::string& what) {
  std::cerr << "fedtune: " << what << "\n";
  return 1;
}

int Fail(const grpc::Status& s) {
  std::string hint;
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE) {
    hint = " (is the coordinator running, and are --coordinator and the certificates right?)";
  } else if (s.error_code() == grpc::StatusCode::PERMISSION_DENIED) {
    hint = " (the Admin API needs an admin certificate: certs/fedtune-certs admin PKI NAME)";
  }
  return Fail(s.error_message() + hint);
}

// --json: see proto_json.h for the convention.
std::string Json(const google::protobuf::Message& m) { return ProtoJson(m).dump(2) + "\n"; }

std::string When(int64_t unix_ms) {
  if (unix_ms <= 0) return "-";
  const std::time_t t = unix_ms / 1000;
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}

std::string Num(double v, int digits) {
  return std::isfinite(v) && v != 0 ? absl::StrFormat("%.*f", digits, v) : std::string("-");
}

// A macro AUROC as shipped: "n/a" when no finding was shared and defined.
std::string Macro(const v1::EvaluationMetrics& m) {
  return m.has_macro_auroc() ? absl::StrFormat("%.4f", m.macro_auroc()) : std::string("n/a");
}

absl::StatusOr<Admin> Admin::Connect(const Globals& g) {
  if (g.ca.empty() || g.cert.empty() || g.key.empty()) {
    return absl::InvalidArgumentError(
        "needs the admin certificate: --ca PKI/ca.pem --cert PKI/admin/NAME.pem --key PKI/admin/NAME.key "
        "(or FEDTUNE_CA / FEDTUNE_CERT / FEDTUNE_KEY)");
  }
  if (absl::Status st = net::CheckDialAddress(g.coordinator); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--coordinator: ", st.message()));
  }
  auto creds = net::MakeClientCredentials({g.ca, g.cert, g.key, ""});
  if (!creds.ok()) return creds.status();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  Admin a;
  a.stub = v1::Admin::NewStub(grpc::CreateCustomChannel(g.coordinator, *creds, args));
  return a;
}

}  // namespace fedtune::cli
