// `fedtune job submit | list | status | watch | cancel`.
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
  if (j.secure_aggregation_bound() > 0) {
    std::cout << absl::StrFormat("  secure aggregation: the coordinator sees only the sum of the sites' masked "
                                 "updates (values clipped to +/-%g)\n",
                                 j.secure_aggregation_bound());
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

}  // namespace

void SetupJob(CLI::App& app, const Globals& g, Args& a, int& code) {
  auto* job = app.add_subcommand("job", "Submit, list, follow and cancel jobs");
  job->require_subcommand(1);
  auto* submit = job->add_subcommand("submit", "Submit a job description (TOML; see deploy/examples/job.toml)");
  submit->add_option("FILE", a.arg, "job.toml")->required()->check(CLI::ExistingFile);
  submit->footer("Example:\n  fedtune job submit deploy/examples/job.toml       # prints the job id\n"
                 "Refused with the reason when the federation cannot run it (too few sites, unknown site ids,\n"
                 "findings or a backbone no connected site has); warnings name offline sites not checked.");
  submit->callback([&] { code = JobSubmit(g, a.arg); });
  auto* list = job->add_subcommand("list", "All jobs with their state");
  list->footer("Example:\n  fedtune job list --json");
  list->callback([&] { code = JobList(g); });
  auto* status = job->add_subcommand("status", "A job's rounds x sites table: state, examples, loss, val AUROC");
  status->add_option("JOB", a.arg, "job id")->required();
  status->footer("Example:\n  fedtune job status job-1a2b3c4d5e");
  status->callback([&] { code = JobStatus(g, a.arg); });
  auto* watch = job->add_subcommand(
      "watch", "Follow a job live until it ends; exit 0 succeeded, 1 failed or cancelled, 3 coordinator unreachable");
  watch->add_option("JOB", a.arg, "job id")->required();
  watch->add_option("--reconnect-for", a.reconnect_seconds,
                    "seconds to keep reconnecting while the coordinator is unreachable (e.g. restarting)")
      ->capture_default_str()
      ->check(CLI::Range(0, 86400));
  watch->footer("Example:\n  fedtune job watch job-1a2b3c4d5e && echo succeeded\n"
                "Survives a coordinator restart: it reconnects and resumes after the last event it printed.");
  watch->callback([&] { code = JobWatch(g, a.arg, a.reconnect_seconds); });
  auto* cancel = job->add_subcommand("cancel", "Cancel a running job; sites abandon its tasks");
  cancel->add_option("JOB", a.arg, "job id")->required();
  cancel->footer("Example:\n  fedtune job cancel job-1a2b3c4d5e   # an operator's right; viewers are refused");
  cancel->callback([&] { code = JobCancel(g, a.arg); });
  job->footer("Examples:\n  fedtune job submit job.toml\n  fedtune job watch JOB\n  fedtune job status JOB");
}

}  // namespace fedtune::cli
