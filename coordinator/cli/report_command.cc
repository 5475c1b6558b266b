// `fedtune report`: the cross-institution report of a job (HTML, JSON, CSV, PDF).
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

// Prints report.html to report.pdf with headless Chromium, when installed.
std::string PrintPdf(const std::string& html, const std::string& pdf) {
  std::string browser;
  for (const char* b : {"chromium", "chromium-browser", "google-chrome"}) {
    std::string out;
    if (Which(b, &out)) {
      browser = out;
      break;
    }
  }
  if (browser.empty()) return "Chromium not found: report.pdf skipped (apt install chromium)";
  // Started directly (no shell): paths are arguments, never parsed as a
  // command line, whatever characters they hold.
  const std::vector<std::string> args = {browser, "--headless", "--no-sandbox", "--disable-gpu",
                                         "--no-pdf-header-footer", "--print-to-pdf=" + pdf,
                                         "file://" + fs::absolute(html).string()};
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, browser.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return "Chromium could not be started: report.pdf skipped";
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !fs::exists(pdf)) return "Chromium could not print report.pdf";
  return "";
}

int Report(const Globals& g, const std::string& id, const std::string& out, bool pdf) {
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::GetReportRequest req;
  req.set_job_id(id);
  v1::GetReportResponse resp;
  grpc::Status s = admin->stub->GetReport(admin->Ctx(60).get(), req, &resp);
  if (!s.ok()) return Fail(s);
  const nlohmann::json report = nlohmann::json::parse(resp.report_json(), nullptr, false);
  if (report.is_discarded()) return Fail("the coordinator sent a report that is not JSON");
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return Fail("cannot create " + out + ": " + ec.message());
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"report.json", report.dump(2) + "\n"},
           {"metrics.csv", report::RenderCsv(report)},
           {"report.html", report::RenderHtml(report)}}) {
    if (auto st = WriteFileAtomically(out + "/" + name, text); !st.ok()) return Fail(std::string(st.message()));
  }
  std::string note;
  if (pdf) note = PrintPdf(out + "/report.html", out + "/report.pdf");
  if (g.json) {
    std::cout << nlohmann::json{{"out", out}, {"pdf", pdf && note.empty()}, {"note", note}}.dump() << "\n";
  } else {
    std::cout << "wrote " << out << "/report.html, report.json, metrics.csv"
              << (pdf && note.empty() ? ", report.pdf" : "") << "\n";
    if (!note.empty()) std::cout << note << "\n";
  }
  return 0;
}

}  // namespace

void SetupReport(CLI::App& app, const Globals& g, Args& a, int& code) {
  auto* report = app.add_subcommand(
      "report", "Write the cross-institution report of a job: report.html (self-contained), report.json, "
                "metrics.csv, and report.pdf when Chromium is installed");
  report->add_option("JOB", a.arg, "job id")->required();
  report->add_option("--out", a.out, "output directory")->required();
  report->add_flag("--no-pdf", a.no_pdf, "skip report.pdf");
  report->footer("Example:\n  fedtune report job-1a2b3c4d5e --out ./report   # open report/report.html");
  report->callback([&] { code = Report(g, a.arg, a.out, !a.no_pdf); });
}

}  // namespace fedtune::cli
