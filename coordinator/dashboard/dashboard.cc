#include "coordinator/dashboard/dashboard.h"

#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/dashboard/dashboard_page.h"
#include "coordinator/report/report.h"

namespace fedtune::coordinator {
namespace {

std::string ToJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  o.always_print_primitive_fields = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(m, &out, o).ok()) return "{}";
  return out;
}

http::Response Json(std::string body) {
  http::Response r;
  r.content_type = "application/json";
  r.body = std::move(body);
  r.headers["Cache-Control"] = "no-store";
  return r;
}

// One SSE message: "event: <kind>\ndata: <json>\n\n" (JSON has no raw newlines).
std::string Sse(const std::string& kind, const std::string& data) {
  return absl::StrCat("event: ", kind, "\ndata: ", data, "\n\n");
}

bool Finished(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

}  // namespace

void AddDashboard(http::Server& server, RoundEngine* engine, const DashboardOptions& options) {
  server.Get("/", [](const http::Request&) {
    http::Response r;
    r.content_type = "text/html; charset=utf-8";
    r.body = DashboardPage();
    // Everything the page needs comes from this server (its one script and
    // style are inline in it); nothing is loaded from elsewhere.
    r.headers["Content-Security-Policy"] =
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'";
    r.headers["Cache-Control"] = "no-store";
    return r;
  });
  server.Get("/api/jobs", [engine](const http::Request&) {
    auto jobs = engine->ListJobs();
    if (!jobs.ok()) return http::ErrorResponse(jobs.status());
    std::string out = "[";
    for (size_t i = 0; i < jobs->size(); ++i) absl::StrAppend(&out, i ? "," : "", ToJson((*jobs)[i]));
    return Json(out + "]");
  });
  server.Get("/api/sites", [engine](const http::Request&) {
    auto sites = engine->ListSites();
    if (!sites.ok()) return http::ErrorResponse(sites.status());
    std::string out = "[";
    for (size_t i = 0; i < sites->size(); ++i) absl::StrAppend(&out, i ? "," : "", ToJson((*sites)[i]));
    return Json(out + "]");
  });
  server.Get("/api/jobs/([A-Za-z0-9_.-]+)", [engine](const http::Request& req) {
    auto job = engine->GetJob(req.captures[0]);
    if (!job.ok()) return http::ErrorResponse(job.status());
    return Json(ToJson(*job));
  });
  server.Get("/jobs/([A-Za-z0-9_.-]+)/report.html", [engine](const http::Request& req) {
    auto job = engine->GetJob(req.captures[0]);
    if (!job.ok()) return http::ErrorResponse(job.status());
    auto sites = engine->ListSites();
    if (!sites.ok()) return http::ErrorResponse(sites.status());
    auto report = report::BuildReport(*job, *sites);
    if (!report.ok()) return http::ErrorResponse(report.status());
    http::Response r;
    r.content_type = "text/html; charset=utf-8";
    r.body = report::RenderHtml(*report);
    return r;
  });
  auto open_streams = std::make_shared<std::atomic<int>>(0);
  server.Get("/api/jobs/([A-Za-z0-9_.-]+)/stream", [engine, options, open_streams](const http::Request& req) {
    const std::string id = req.captures[0];
    auto first = engine->GetJob(id);
    if (!first.ok()) return http::ErrorResponse(first.status());
    if (open_streams->load() >= options.max_streams) {
      return http::ErrorResponse(absl::UnavailableError("too many dashboards are open; try again later"));
    }
    http::Response r;
    r.content_type = "text/event-stream";
    r.headers["Cache-Control"] = "no-store";
    r.stream = [engine, options, id, open_streams](const std::function<bool(const std::string&)>& write) {
      struct Open {
        std::atomic<int>& n;
        explicit Open(std::atomic<int>& count) : n(count) { ++n; }
        ~Open() { --n; }
      } open(*open_streams);
      int64_t seq = 0;
      std::string last_status;
      const auto until = std::chrono::steady_clock::now() + options.max_stream;
      while (std::chrono::steady_clock::now() < until) {
        int64_t last = seq;
        auto events = engine->EventsAfter(id, seq, &last);
        if (!events.ok()) return;
        for (const auto& e : *events) {
          if (!write(Sse("event", ToJson(e)))) return;
        }
        seq = last;
        auto job = engine->GetJob(id);
        if (!job.ok()) return;
        const std::string status = ToJson(*job);
        if (status != last_status) {
          if (!write(Sse("status", status))) return;
          last_status = status;
        } else if (!write(": keep-alive\n\n")) {
          return;
        }
        if (Finished(job->state())) {
          write(Sse("end", "{}"));
          return;
        }
        std::this_thread::sleep_for(options.poll);
      }
    };
    return r;
  });
}

}  // namespace fedtune::coordinator
