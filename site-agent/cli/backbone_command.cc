// `fedtune-site backbone pretrain`: a backbone trained on an ingested
// workspace of public (non-federated) data (runner/pretrain.h), for when
// none is at hand (the demo). It reads a site workspace, so
// it belongs to the site tool: the operator's `fedtune` never links site code.
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/str_split.h"
#include "site-agent/cli/commands.h"
#include "site-agent/runner/pretrain.h"

namespace fedtune::site {
namespace {

int Fail(absl::string_view what) {
  std::cerr << "fedtune-site backbone pretrain: " << what << "\n";
  return 1;
}

}  // namespace

void SetupBackbone(CLI::App& app, BackboneCommand& cmd) {
  auto* backbone = app.add_subcommand("backbone", "Base weights for a federation, made at this host");
  backbone->require_subcommand(1);
  auto* pre = backbone->add_subcommand(
      "pretrain", "Train a backbone on an ingested workspace of public data (full fine-tuning of a classifier, "
                  "then the backbone alone is written) and print its SHA-256; every site then holds that file and "
                  "the job's [backbone] sha256 names it");
  pre->add_option("--workspace", cmd.workspace, "workspace written by fedtune-site ingest")->required();
  pre->add_option("--findings", cmd.findings, "comma-separated findings to train on")->required();
  pre->add_option("--arch", cmd.arch, "backbone preset")->capture_default_str();
  pre->add_option("--image-size", cmd.image_size, "input size (default: the preset's)");
  pre->add_option("--epochs", cmd.epochs, "epochs")->capture_default_str();
  pre->add_option("--batch-size", cmd.batch_size, "batch size")->capture_default_str();
  pre->add_option("--learning-rate", cmd.learning_rate, "AdamW learning rate")->capture_default_str();
  pre->add_option("--seed", cmd.seed, "random seed")->capture_default_str();
  pre->add_option("--out", cmd.out, "output .safetensors file")->required();
  pre->add_flag("--json", cmd.json, "Print JSON: {path, sha256, best_val_auroc}");
  pre->footer("Example:\n  fedtune-site backbone pretrain --workspace public/workspace "
              "--findings \"Cardiomegaly,Pneumothorax\" --arch vit-tiny/16 --image-size 64 --out backbone.safetensors\n"
              "A random backbone instead: fedtune backbone init (the operator's tool).");
  pre->callback([&cmd] { throw CLI::RuntimeError(RunBackbonePretrain(cmd)); });
}

int RunBackbonePretrain(const BackboneCommand& a) {
  PretrainOptions o;
  o.workspace = a.workspace;
  for (absl::string_view f : absl::StrSplit(a.findings, ',', absl::SkipEmpty())) o.findings.emplace_back(f);
  o.arch = a.arch;
  o.image_size = a.image_size;
  o.epochs = a.epochs;
  o.batch_size = a.batch_size;
  o.learning_rate = a.learning_rate;
  o.seed = static_cast<uint64_t>(a.seed);
  o.out = a.out;
  auto r = PretrainBackbone(o, [&](const model::EpochReport& e) {
    if (!a.json) {
      std::cout << absl::StrFormat("epoch %d/%d  loss %.4f  val AUROC %s  %.0f img/s\n", e.epoch, e.epochs,
                                   e.train_loss,
                                   std::isfinite(e.val_auroc) ? absl::StrFormat("%.4f", e.val_auroc) : "-",
                                   e.images_per_second)
                << std::flush;
    }
  });
  if (!r.ok()) return Fail(r.status().message());
  if (a.json) {
    std::cout << nlohmann::json{{"path", r->path}, {"sha256", r->sha256}, {"best_val_auroc", r->best_val_auroc}}.dump()
              << "\n";
  } else {
    std::cout << r->sha256 << "  " << r->path << "\n";
  }
  return 0;
}

}  // namespace fedtune::site
