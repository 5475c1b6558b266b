// `fedtune model export | promote | list`.
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

}  // namespace

void SetupModel(CLI::App& app, const Globals& g, Args& a, int& code) {
  auto* model = app.add_subcommand("model", "Export a job's global model; promote one to the model sites serve");
  model->require_subcommand(1);
  model->footer("Examples:\n  fedtune model export job-1a2b3c4d5e --out ./adapter\n"
                "  fedtune model promote job-1a2b3c4d5e --best\n  fedtune model list");
  auto* promote = model->add_subcommand(
      "promote", "Make a job's global version the federation's model in use (operators); every site fetches it "
                 "on its next poll, with decision thresholds chosen on the sites' pooled validation scores");
  promote->add_option("JOB", a.arg, "job id");
  promote->add_option("--round", a.round, "the version of this round; default: the latest")->check(CLI::PositiveNumber);
  promote->add_flag("--best", a.best,
                    "the version with the highest pooled validation macro AUROC (measured by the sites when the next "
                    "round started, and at the final evaluation for the last version)");
  promote->add_flag("--rollback", a.rollback, "return to the model in use before the current one (no JOB)");
  promote->footer("Examples:\n  fedtune model promote job-1a2b3c4d5e --best\n"
                  "  fedtune model promote job-1a2b3c4d5e --round 3\n  fedtune model promote --rollback\n"
                  "Sites keep the previous model for rollback and log and export (/metrics) the version they serve.");
  promote->callback([&] { code = ModelPromote(g, a.arg, a.round, a.best, a.rollback); });
  auto* mlist = model->add_subcommand("list", "The promotion history, oldest first; the last entry is in use");
  mlist->footer("Example:\n  fedtune model list --json");
  mlist->callback([&] { code = ModelList(g); });
  auto* exp = model->add_subcommand(
      "export", "Write a global model version: LoRA as a PEFT adapter (adapter_model.safetensors + "
                "adapter_config.json); BitFit, linear probe and full fine-tuning as a transformers "
                "Dinov2ForImageClassification directory (needs the base weights: --backbone)");
  exp->add_option("JOB", a.arg, "job id")->required();
  exp->add_option("--round", a.round, "global version (the round that produced it); default: the latest");
  exp->add_option("--out", a.out, "output directory")->required();
  exp->add_option("--backbone", a.export_backbone,
                  "the base weights the sites hold (BitFit, linear probe, full); checked by SHA-256 against the job")
      ->check(CLI::ExistingFile);
  exp->footer("Examples:\n  fedtune model export job-1a2b3c4d5e --out ./adapter            # LoRA\n"
              "  fedtune model export job-6f7a8b9c0d --backbone rad-dino.safetensors --out ./model   # BitFit, full\n"
              "A job with no aggregated round has no model to export (refused).");
  exp->callback([&] { code = ModelExport(g, a.arg, a.round, a.out, a.export_backbone); });
}

}  // namespace fedtune::cli
