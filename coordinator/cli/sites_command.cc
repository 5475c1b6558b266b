// `fedtune sites`: the enrolled sites and what they declared.
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
namespace {

namespace fs = std::filesystem;

int Sites(const Globals& g) {
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::ListSitesResponse resp;
  grpc::Status s = admin->stub->ListSites(admin->Ctx().get(), v1::ListSitesRequest(), &resp);
  if (!s.ok()) return Fail(s);
  if (g.json) {
    std::cout << Json(resp);
    return 0;
  }
  std::cout << absl::StrFormat("%-16s %-9s %-10s %-20s %-14s %s\n", "site", "enrolled", "connected", "last seen",
                               "backbone", "images train/val/test");
  for (const auto& si : resp.sites()) {
    std::map<std::string, int64_t> images;
    for (const auto& sp : si.dataset().splits()) images[sp.split()] = sp.images();
    auto count = [&](const char* k) {
      auto it = images.find(k);
      return it == images.end() ? std::string("-") : it->second < 0 ? std::string("<k") : std::to_string(it->second);
    };
    std::cout << absl::StrFormat("%-16s %-9s %-10s %-20s %-14s %s/%s/%s\n", si.site_id(), si.enrolled() ? "yes" : "no",
                                 si.connected() ? "yes" : "no", When(si.last_seen_unix_ms()),
                                 si.backbone_sha256().substr(0, 12), count("train"), count("val"), count("test"));
  }
  return 0;
}


}  // namespace

void SetupSites(CLI::App& app, const Globals& g, int& code) {
  auto* sites = app.add_subcommand("sites", "Enrolled sites: connected, last seen, backbone, dataset summary");
  sites->footer("Example:\n  fedtune sites --json    # counts below a site's k are withheld by the site");
  sites->callback([&] { code = Sites(g); });
}

}  // namespace fedtune::cli
