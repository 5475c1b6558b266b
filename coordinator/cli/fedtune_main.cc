// fedtune: the federation operator's command line. Talks to the coordinator's
// Admin API with an admin certificate (OU=admin); `backbone init` works
// offline.
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

struct Globals {
  std::string coordinator = "127.0.0.1:7443";
  std::string ca, cert, key;
  bool json = false;
};

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

std::string Num(double v, int digits = 4) {
  return std::isfinite(v) && v != 0 ? absl::StrFormat("%.*f", digits, v) : std::string("-");
}

// A macro AUROC as shipped: "n/a" when no finding was shared and defined.
std::string Macro(const v1::EvaluationMetrics& m) {
  return m.has_macro_auroc() ? absl::StrFormat("%.4f", m.macro_auroc()) : std::string("n/a");
}

class Admin {
 public:
  static absl::StatusOr<Admin> Connect(const Globals& g) {
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
  std::unique_ptr<grpc::ClientContext> Ctx(int seconds = 30) const {
    auto ctx = std::make_unique<grpc::ClientContext>();
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
    return ctx;
  }
  std::unique_ptr<v1::Admin::Stub> stub;
};

void PrintStatus(const v1::JobStatus& j) {
  std::cout << "job " << j.job_id() << " \"" << j.name() << "\": " << report::JobStateName(j.state()) << ", " << j.rounds_done()
            << "/" << j.rounds_total() << " rounds aggregated";
  if (!j.reason().empty()) std::cout << "\n  " << j.reason();
  std::cout << "\n  submitted " << When(j.created_unix_ms()) << ", updated " << When(j.updated_unix_ms()) << "\n";
  if (const auto& p = j.privacy(); !p.mechanism().empty()) {
    std::cout << absl::StrFormat("  %s: epsilon %.3g spent after %d round%s, %.3g planned (delta %g%s)\n",
                                 p.mechanism(), p.epsilon_spent(), p.rounds_accounted(),
                                 p.rounds_accounted() == 1 ? "" : "s", p.epsilon_planned(), p.delta(),
                                 p.max_epsilon() > 0 ? absl::StrFormat(", limit %g", p.max_epsilon()) : "");
  }
  for (const auto& r : j.rounds()) {
    std::cout << "\n"
              << (r.kind() == "evaluate" ? std::string("final evaluation (test split)")
                  : r.kind() == "local"  ? std::string("local-only baselines")
                                         : absl::StrCat("round ", r.round()))
              << (r.attempt() > 1 ? absl::StrCat(" attempt ", r.attempt()) : "") << ": " << r.state();
    if (r.has_global()) std::cout << " -> global v" << r.global().version() << " " << r.global().sha256().substr(0, 12);
    std::cout << "\n";
    if (r.kind() == "evaluate") {
      std::cout << absl::StrFormat("  %-16s %-20s %-10s %8s %8s  %s\n", "site", "model", "state", "images", "AUROC",
                                   "per finding");
    } else {
      std::cout << absl::StrFormat("  %-16s %-10s %8s %8s %10s %10s\n", "site", "state", "examples", "loss",
                                   "val before", "val after");
    }
    for (const auto& s : r.sites()) {
      if (r.kind() == "evaluate") {
        std::string per;
        for (const auto& f : s.evaluation().findings()) {
          absl::StrAppend(&per, per.empty() ? "" : ", ", f.finding(), " ",
                          f.suppressed() ? std::string("<k") : f.has_auroc() ? Num(f.auroc(), 3) : "n/a");
        }
        std::cout << absl::StrFormat("  %-16s %-20s %-10s %8d %8s  %s\n", s.site_id(), s.model_label(), s.state(),
                                     s.evaluation().examples(), Macro(s.evaluation()), per);
      } else {
        std::cout << absl::StrFormat("  %-16s %-10s %8d %8s %10s %10s\n", s.site_id(), s.state(), s.num_examples(),
                                     Num(s.train_loss()), Macro(s.val_before()), Macro(s.val_after()));
      }
      if (!s.reason().empty()) std::cout << "      " << s.reason() << "\n";
    }
  }
}

int JobSubmit(const Globals& g, const std::string& file) {
  auto toml = ReadFileBytes(file);
  if (!toml.ok()) return Fail(std::string(toml.status().message()));
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::SubmitJobRequest req;
  req.set_job_toml(*toml);
  req.set_file_name(fs::path(file).filename().string());
  v1::SubmitJobResponse resp;
  grpc::Status s = admin->stub->SubmitJob(admin->Ctx().get(), req, &resp);
  if (!s.ok()) return Fail(s);
  if (g.json) {
    std::cout << Json(resp);
  } else {
    for (const auto& w : resp.warnings()) std::cerr << "fedtune: warning: " << w << "\n";
    std::cout << resp.job_id() << "\n";
  }
  return 0;
}

int JobList(const Globals& g) {
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::ListJobsResponse resp;
  grpc::Status s = admin->stub->ListJobs(admin->Ctx().get(), v1::ListJobsRequest(), &resp);
  if (!s.ok()) return Fail(s);
  if (g.json) {
    std::cout << Json(resp);
    return 0;
  }
  std::cout << absl::StrFormat("%-16s %-24s %-11s %7s  %s\n", "job", "name", "state", "rounds", "submitted");
  for (const auto& j : resp.jobs()) {
    std::cout << absl::StrFormat("%-16s %-24s %-11s %3d/%-3d  %s\n", j.job_id(), j.name(), report::JobStateName(j.state()),
                                 j.rounds_done(), j.rounds_total(), When(j.created_unix_ms()));
  }
  return 0;
}

int JobStatus(const Globals& g, const std::string& id) {
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::GetJobRequest req;
  req.set_job_id(id);
  v1::JobStatus resp;
  grpc::Status s = admin->stub->GetJob(admin->Ctx().get(), req, &resp);
  if (!s.ok()) return Fail(s);
  if (g.json) {
    std::cout << Json(resp);
  } else {
    PrintStatus(resp);
  }
  return 0;
}

// Follows a job to its end, reconnecting (and resuming after the last event
// seen) while the coordinator restarts. Exit: 0 succeeded, 1 failed or
// cancelled (or refused), 3 the coordinator stayed unreachable for
// --reconnect-for seconds.
int JobWatch(const Globals& g, const std::string& id, int reconnect_seconds) {
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::JobState last = v1::JOB_STATE_UNSPECIFIED;
  int64_t after = 0;
  auto unreachable_since = std::chrono::steady_clock::now();
  bool said_lost = false;
  while (true) {
    grpc::ClientContext ctx;  // no deadline: follows the job to its end
    v1::WatchJobRequest req;
    req.set_job_id(id);
    req.set_after_seq(after);
    auto reader = admin->stub->WatchJob(&ctx, req);
    v1::JobEvent e;
    bool finished = false;
    while (reader->Read(&e)) {
      unreachable_since = std::chrono::steady_clock::now();
      if (said_lost) {
        std::cerr << "fedtune: reconnected to the coordinator\n";
        said_lost = false;
      }
      after = std::max(after, e.seq());
      if (e.job_state() != v1::JOB_STATE_UNSPECIFIED) last = e.job_state();
      finished = finished || e.kind() == "job_finished";
      if (g.json) {
        std::cout << ProtoJson(e).dump() << "\n" << std::flush;  // one event per line
        continue;
      }
      std::string text = absl::StrCat(When(e.unix_ms()).substr(11), "  ");
      if (e.round() > 0) absl::StrAppend(&text, "r", e.round(), " ");
      if (!e.site_id().empty()) absl::StrAppend(&text, e.site_id(), " ");
      if (e.kind() == "progress") {
        absl::StrAppend(&text, e.message(), "  loss ", Num(e.loss()), "  val AUROC ", Num(e.val_auroc()));
      } else {
        absl::StrAppend(&text, e.kind(), e.message().empty() ? "" : ": ", e.message());
      }
      std::cout << text << "\n" << std::flush;
    }
    grpc::Status s = reader->Finish();
    if (s.ok() && finished) return last == v1::JOB_STATE_SUCCEEDED ? 0 : 1;
    const bool transport = s.error_code() == grpc::StatusCode::UNAVAILABLE ||
                           s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
                           s.error_code() == grpc::StatusCode::CANCELLED || s.ok();
    if (!transport) return Fail(s);  // refused: unknown job, not an admin, ...
    const double lost = std::chrono::duration<double>(std::chrono::steady_clock::now() - unreachable_since).count();
    if (lost >= reconnect_seconds) {
      std::cerr << "fedtune: the coordinator at " << g.coordinator << " has been unreachable for "
                << static_cast<int>(lost) << " s (" << s.error_message() << "); job " << id
                << " may still be running: `fedtune job watch " << id << "` resumes\n";
      return 3;
    }
    if (!said_lost) {
      std::cerr << "fedtune: lost the coordinator (" << s.error_message() << "); reconnecting for up to "
                << reconnect_seconds << " s\n";
      said_lost = true;
    }
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

int JobCancel(const Globals& g, const std::string& id) {
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::CancelJobRequest req;
  req.set_job_id(id);
  v1::JobStatus resp;
  grpc::Status s = admin->stub->CancelJob(admin->Ctx().get(), req, &resp);
  if (!s.ok()) return Fail(s);
  if (g.json) {
    std::cout << Json(resp);
  } else {
    std::cout << "job " << id << ": " << report::JobStateName(resp.state()) << "\n";
  }
  return 0;
}

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

// A global version of a BitFit, linear-probe or full fine-tuning job: the
// base weights (the file the sites hold) plus the federation's differences,
// written as a transformers Dinov2ForImageClassification directory.
int WriteHuggingFaceModel(const Globals& g, const std::string& id, const std::string& global,
                          const std::string& job_toml, const std::string& backbone, const std::string& out) {
  auto spec = coordinator::ParseJobSpec(job_toml, id);
  if (!spec.ok()) return Fail(std::string(spec.status().message()));
  if (backbone.empty()) {
    return Fail(absl::StrCat("job ", id, " fine-tunes with ", spec->train.method(),
                             ": its model is the base weights plus the federation's changes; pass the base file the "
                             "sites hold with --backbone FILE (SHA-256 ",
                             spec->backbone_sha256.substr(0, 16), "...)"));
  }
  auto sha = Sha256FileHex(backbone);
  if (!sha.ok()) return Fail(std::string(sha.status().message()));
  if (*sha != spec->backbone_sha256) {
    return Fail(absl::StrCat(backbone, " has SHA-256 ", sha->substr(0, 16), "..., the job's base weights ",
                             spec->backbone_sha256.substr(0, 16), "...: not the file the sites trained from"));
  }
  auto model_spec = fl::ModelSpecFor(spec->backbone_architecture, spec->train);
  if (!model_spec.ok()) return Fail(std::string(model_spec.status().message()));
  model::ClassifierOptions o;
  o.device = "cpu";
  o.backbone_path = backbone;
  auto m = model::Classifier::Create(*model_spec, o);
  if (!m.ok()) return Fail(std::string(m.status().message()));
  auto state = SafetensorsFile::FromBytes(global);
  if (!state.ok()) return Fail(std::string(state.status().message()));
  if (auto st = (*m)->SetGlobalState(state->ReadAll()); !st.ok()) return Fail(std::string(st.message()));
  if (auto st = (*m)->SaveHuggingFace(out); !st.ok()) return Fail(std::string(st.message()));
  if (g.json) {
    std::cout << nlohmann::json{{"out", out}, {"format", "transformers"}, {"method", spec->train.method()}}.dump()
              << "\n";
  } else {
    std::cout << "wrote " << out << "/model.safetensors, config.json and preprocessor_config.json: a transformers "
              << "Dinov2ForImageClassification (" << spec->train.method() << ", base " << sha->substr(0, 12)
              << "); load it with from_pretrained(\"" << out << "\")\n";
  }
  return 0;
}

int ModelExport(const Globals& g, const std::string& id, int round, const std::string& out,
                const std::string& backbone) {
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::ExportModelRequest req;
  req.set_job_id(id);
  req.set_version(round);
  auto ctx = admin->Ctx(600);
  auto reader = admin->stub->ExportModel(ctx.get(), req);
  std::map<std::string, std::string> files, sha;
  v1::ExportChunk c;
  const std::set<std::string> known = {"adapter_model.safetensors", "adapter_config.json", "global_state.safetensors",
                                       "job.toml"};
  while (reader->Read(&c)) {
    if (!known.count(c.file_name())) return Fail("the coordinator sent an unexpected file name");
    files[c.file_name()] += c.data();
    if (!c.sha256().empty()) sha[c.file_name()] = c.sha256();
  }
  grpc::Status s = reader->Finish();
  if (!s.ok()) return Fail(s);
  for (const auto& [name, bytes] : files) {
    if (Sha256Hex(bytes) != sha[name]) return Fail(name + ": SHA-256 mismatch after transfer");
  }
  if (files.count("global_state.safetensors")) {
    return WriteHuggingFaceModel(g, id, files["global_state.safetensors"], files["job.toml"], backbone, out);
  }
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) return Fail("cannot create " + out + ": " + ec.message());
  for (const auto& [name, bytes] : files) {
    if (auto st = WriteFileAtomically(out + "/" + name, bytes); !st.ok()) return Fail(std::string(st.message()));
  }
  if (g.json) {
    std::cout << "{\"out\": \"" << out << "\", \"format\": \"peft\", \"adapter_model.safetensors\": \""
              << sha["adapter_model.safetensors"] << "\"}\n";
  } else {
    std::cout << "wrote " << out << "/adapter_model.safetensors (SHA-256 " << sha["adapter_model.safetensors"]
              << ") and " << out << "/adapter_config.json: a PEFT LoRA adapter for the job's base model\n";
  }
  return 0;
}

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

void PrintPromotion(const v1::Promotion& p) {
  std::cout << absl::StrFormat("#%d %s job %s version %d (%s) by %s at %s\n    %s\n", p.seq(), p.action(),
                               p.job_id(), p.version(), p.sha256().substr(0, 12), p.promoted_by(),
                               When(p.promoted_unix_ms()), p.note());
  std::string thresholds;
  for (const auto& t : p.thresholds()) {
    absl::StrAppend(&thresholds, thresholds.empty() ? "" : ", ", t.finding(), " ", absl::StrFormat("%.3f", t.threshold()));
  }
  if (!thresholds.empty()) std::cout << "    thresholds: " << thresholds << "\n";
}

int ModelPromote(const Globals& g, const std::string& id, int round, bool best, bool rollback) {
  if (rollback == !id.empty()) return Fail("give a JOB to promote, or --rollback alone");
  if (best && round > 0) return Fail("give --round or --best, not both");
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::PromoteModelRequest req;
  req.set_job_id(id);
  req.set_round(std::max(round, 0));
  req.set_best(best);
  req.set_rollback(rollback);
  v1::Promotion resp;
  grpc::Status s = admin->stub->PromoteModel(admin->Ctx().get(), req, &resp);
  if (!s.ok()) return Fail(s);
  if (g.json) {
    std::cout << Json(resp);
  } else {
    PrintPromotion(resp);
    std::cout << "sites fetch it on their next poll\n";
  }
  return 0;
}

int ModelList(const Globals& g) {
  auto admin = Admin::Connect(g);
  if (!admin.ok()) return Fail(std::string(admin.status().message()));
  v1::ListPromotionsResponse resp;
  grpc::Status s = admin->stub->ListPromotions(admin->Ctx().get(), v1::ListPromotionsRequest(), &resp);
  if (!s.ok()) return Fail(s);
  if (g.json) {
    std::cout << Json(resp);
    return 0;
  }
  if (resp.promotions().empty()) {
    std::cout << "no model promoted yet (fedtune model promote JOB)\n";
    return 0;
  }
  for (const auto& p : resp.promotions()) PrintPromotion(p);
  const auto& current = *resp.promotions().rbegin();
  std::cout << "in use: job " << current.job_id() << " version " << current.version() << "\n";
  return 0;
}

int BackboneInit(const std::string& arch, int64_t seed, int image_size, const std::string& out, bool json) {
  v1::TrainConfig tc;
  tc.add_findings("x");
  tc.set_method("linear_probe");
  tc.set_image_size(image_size);
  auto spec = fl::ModelSpecFor(arch, tc);
  if (!spec.ok()) return Fail(std::string(spec.status().message()));
  model::ClassifierOptions o;
  o.device = "cpu";
  o.seed = static_cast<uint64_t>(seed);
  auto m = model::Classifier::Create(*spec, o);
  if (!m.ok()) return Fail(std::string(m.status().message()));
  if (auto st = (*m)->SaveBackbone(out); !st.ok()) return Fail(std::string(st.message()));
  auto sha = Sha256FileHex(out);
  if (!sha.ok()) return Fail(std::string(sha.status().message()));
  if (json) {
    std::cout << "{\"path\": \"" << out << "\", \"sha256\": \"" << *sha << "\"}\n";
  } else {
    std::cout << *sha << "  " << out << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace fedtune::cli

int main(int argc, char** argv) {
  using namespace fedtune::cli;
  CLI::App app{"fedtune: operate a fedtune federation. Submit and follow fine-tuning jobs, list sites, export "
               "models. Talks to the coordinator over mutual TLS with an admin certificate."};
  app.require_subcommand(1);
  app.footer(
      "Examples:\n"
      "  export FEDTUNE_COORDINATOR=coordinator.example.org:7443 FEDTUNE_CA=pki/ca.pem \\\n"
      "         FEDTUNE_CERT=pki/admin/alice.pem FEDTUNE_KEY=pki/admin/alice.key\n"
      "  fedtune sites\n"
      "  fedtune job submit deploy/examples/job.toml\n"
      "  fedtune job watch job-1a2b3c4d5e\n"
      "  fedtune model export job-1a2b3c4d5e --out ./adapter\n"
      "Run `fedtune COMMAND --help` for each command.");
  // Global options are taken before or after the command (`fedtune job list --json`).
  app.fallthrough();
  Globals g;
  app.add_option("--coordinator", g.coordinator, "host:port of the coordinator")
      ->envname("FEDTUNE_COORDINATOR")
      ->capture_default_str();
  app.add_option("--ca", g.ca, "federation CA certificate (PKI/ca.pem)")->envname("FEDTUNE_CA");
  app.add_option("--cert", g.cert, "admin certificate (PKI/admin/NAME.pem)")->envname("FEDTUNE_CERT");
  app.add_option("--key", g.key, "admin private key (PKI/admin/NAME.key)")->envname("FEDTUNE_KEY");
  app.add_flag("--json", g.json, "machine-readable output");

  int code = 0;
  std::string arg, out;
  int round = -1;
  auto* job = app.add_subcommand("job", "Submit, list, follow and cancel jobs");
  job->require_subcommand(1);
  auto* submit = job->add_subcommand("submit", "Submit a job description (TOML; see deploy/examples/job.toml)");
  submit->add_option("FILE", arg, "job.toml")->required()->check(CLI::ExistingFile);
  submit->footer("Example:\n  fedtune job submit deploy/examples/job.toml       # prints the job id\n"
                 "Refused with the reason when the federation cannot run it (too few sites, unknown site ids,\n"
                 "findings or a backbone no connected site has); warnings name offline sites not checked.");
  submit->callback([&] { code = JobSubmit(g, arg); });
  auto* list = job->add_subcommand("list", "All jobs with their state");
  list->footer("Example:\n  fedtune job list --json");
  list->callback([&] { code = JobList(g); });
  auto* status = job->add_subcommand("status", "A job's rounds x sites table: state, examples, loss, val AUROC");
  status->add_option("JOB", arg, "job id")->required();
  status->footer("Example:\n  fedtune job status job-1a2b3c4d5e");
  status->callback([&] { code = JobStatus(g, arg); });
  auto* watch = job->add_subcommand(
      "watch", "Follow a job live until it ends; exit 0 succeeded, 1 failed or cancelled, 3 coordinator unreachable");
  watch->add_option("JOB", arg, "job id")->required();
  int reconnect_seconds = 300;
  watch->add_option("--reconnect-for", reconnect_seconds,
                    "seconds to keep reconnecting while the coordinator is unreachable (e.g. restarting)")
      ->capture_default_str()
      ->check(CLI::Range(0, 86400));
  watch->footer("Example:\n  fedtune job watch job-1a2b3c4d5e && echo succeeded\n"
                "Survives a coordinator restart: it reconnects and resumes after the last event it printed.");
  watch->callback([&] { code = JobWatch(g, arg, reconnect_seconds); });
  auto* cancel = job->add_subcommand("cancel", "Cancel a running job; sites abandon its tasks");
  cancel->add_option("JOB", arg, "job id")->required();
  cancel->footer("Example:\n  fedtune job cancel job-1a2b3c4d5e   # an operator's right; viewers are refused");
  cancel->callback([&] { code = JobCancel(g, arg); });
  job->footer("Examples:\n  fedtune job submit job.toml\n  fedtune job watch JOB\n  fedtune job status JOB");

  auto* sites = app.add_subcommand("sites", "Enrolled sites: connected, last seen, backbone, dataset summary");
  sites->footer("Example:\n  fedtune sites --json    # counts below a site's k are withheld by the site");
  sites->callback([&] { code = Sites(g); });

  auto* model = app.add_subcommand("model", "Export a job's global model; promote one to the model sites serve");
  model->require_subcommand(1);
  model->footer("Examples:\n  fedtune model export job-1a2b3c4d5e --out ./adapter\n"
                "  fedtune model promote job-1a2b3c4d5e --best\n  fedtune model list");
  bool best = false, rollback = false;
  auto* promote = model->add_subcommand(
      "promote", "Make a job's global version the federation's model in use (operators); every site fetches it "
                 "on its next poll, with decision thresholds chosen on the sites' pooled validation scores");
  promote->add_option("JOB", arg, "job id");
  promote->add_option("--round", round, "the version of this round; default: the latest")->check(CLI::PositiveNumber);
  promote->add_flag("--best", best,
                    "the version with the highest pooled validation macro AUROC (measured by the sites when the next "
                    "round started, and at the final evaluation for the last version)");
  promote->add_flag("--rollback", rollback, "return to the model in use before the current one (no JOB)");
  promote->footer("Examples:\n  fedtune model promote job-1a2b3c4d5e --best\n"
                  "  fedtune model promote job-1a2b3c4d5e --round 3\n  fedtune model promote --rollback\n"
                  "Sites keep the previous model for rollback and log and export (/metrics) the version they serve.");
  promote->callback([&] { code = ModelPromote(g, arg, round, best, rollback); });
  auto* mlist = model->add_subcommand("list", "The promotion history, oldest first; the last entry is in use");
  mlist->footer("Example:\n  fedtune model list --json");
  mlist->callback([&] { code = ModelList(g); });
  std::string export_backbone;
  auto* exp = model->add_subcommand(
      "export", "Write a global model version: LoRA as a PEFT adapter (adapter_model.safetensors + "
                "adapter_config.json); BitFit, linear probe and full fine-tuning as a transformers "
                "Dinov2ForImageClassification directory (needs the base weights: --backbone)");
  exp->add_option("JOB", arg, "job id")->required();
  exp->add_option("--round", round, "global version (the round that produced it); default: the latest");
  exp->add_option("--out", out, "output directory")->required();
  exp->add_option("--backbone", export_backbone,
                  "the base weights the sites hold (BitFit, linear probe, full); checked by SHA-256 against the job")
      ->check(CLI::ExistingFile);
  exp->footer("Examples:\n  fedtune model export job-1a2b3c4d5e --out ./adapter            # LoRA\n"
              "  fedtune model export job-6f7a8b9c0d --backbone rad-dino.safetensors --out ./model   # BitFit, full\n"
              "A job with no aggregated round has no model to export (refused).");
  exp->callback([&] { code = ModelExport(g, arg, round, out, export_backbone); });

  bool no_pdf = false;
  auto* report = app.add_subcommand(
      "report", "Write the cross-institution report of a job: report.html (self-contained), report.json, "
                "metrics.csv, and report.pdf when Chromium is installed");
  report->add_option("JOB", arg, "job id")->required();
  report->add_option("--out", out, "output directory")->required();
  report->add_flag("--no-pdf", no_pdf, "skip report.pdf");
  report->footer("Example:\n  fedtune report job-1a2b3c4d5e --out ./report   # open report/report.html");
  report->callback([&] { code = Report(g, arg, out, !no_pdf); });

  auto* backbone = app.add_subcommand(
      "backbone", "Base weights every site holds: a random backbone (init); one pretrained on public data is "
                  "made where that data is, with fedtune-site backbone pretrain");
  backbone->require_subcommand(1);
  backbone->footer("Example:\n  fedtune backbone init --out backbone.safetensors   # then sha256sum it into job.toml");
  std::string arch = "vit-tiny/16";
  int64_t seed = 0;
  int image_size = 0;
  auto* init = backbone->add_subcommand(
      "init", "Write a randomly initialized backbone (Hugging Face layout) and print its SHA-256; give every site "
              "the same file and put the hash in the job's [backbone] sha256");
  init->add_option("--arch", arch, "preset: vit-tiny/16, vit-small/16, mae-base/16, rad-dino, dinov2-base/14")
      ->capture_default_str();
  init->add_option("--seed", seed, "random seed")->capture_default_str();
  init->add_option("--image-size", image_size, "input size (default: the preset's)");
  init->add_option("--out", out, "output .safetensors file")->required();
  init->footer("Example:\n  fedtune backbone init --arch vit-tiny/16 --image-size 64 --out backbone.safetensors");
  init->callback([&] { code = BackboneInit(arch, seed, image_size, out, g.json); });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int c = app.exit(e);
    return c == 0 ? 0 : 2;
  }
  return code;
}
