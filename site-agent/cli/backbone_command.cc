// `fedtune-site backbone pretrain`: a backbone trained on an ingested
// workspace of public (non-federated) data, the way foundation models are
// made, for when none is at hand (the demo). It reads a site workspace, so
// it belongs to the site tool: the operator's `fedtune` never links site code.
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/str_split.h"
#include "common/core/hashing.h"
#include "common/fl/task_spec.h"
#include "common/model/classifier.h"
#include "site-agent/cli/commands.h"
#include "site-agent/runner/cache_dataset.h"

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
  v1::TrainConfig tc;
  for (absl::string_view f : absl::StrSplit(a.findings, ',', absl::SkipEmpty())) tc.add_findings(std::string(f));
  tc.set_method("full");
  tc.set_image_size(a.image_size);
  auto spec = fl::ModelSpecFor(a.arch, tc);
  if (!spec.ok()) return Fail(spec.status().message());
  CacheDatasetOptions dso;
  dso.findings = spec->findings;
  auto train = CacheDataset::Open(a.workspace, dso);
  if (!train.ok()) return Fail(train.status().message());
  dso.split = "val";
  auto val = CacheDataset::Open(a.workspace, dso);
  if (!val.ok()) return Fail(val.status().message());
  if ((*train)->size() == 0) return Fail("the workspace has no training images");
  model::ClassifierOptions o;
  o.device = "auto";
  o.seed = static_cast<uint64_t>(a.seed);
  auto m = model::Classifier::Create(*spec, o);
  if (!m.ok()) return Fail(m.status().message());
  model::TrainOptions to;
  to.epochs = a.epochs;
  to.batch_size = a.batch_size;
  to.learning_rate = a.learning_rate;
  to.seed = static_cast<uint64_t>(a.seed);
  auto r = (*m)->Train(**train, **val, to, [&](const model::EpochReport& e) {
    if (!a.json) {
      std::cout << absl::StrFormat("epoch %d/%d  loss %.4f  val AUROC %s  %.0f img/s\n", e.epoch, e.epochs,
                                   e.train_loss,
                                   std::isfinite(e.val_auroc) ? absl::StrFormat("%.4f", e.val_auroc) : "-",
                                   e.images_per_second)
                << std::flush;
    }
  });
  if (!r.ok()) return Fail(r.status().message());
  if (auto st = (*m)->SaveBackbone(a.out); !st.ok()) return Fail(st.message());
  auto sha = Sha256FileHex(a.out);
  if (!sha.ok()) return Fail(sha.status().message());
  if (a.json) {
    std::cout << nlohmann::json{{"path", a.out}, {"sha256", *sha}, {"best_val_auroc", r->best_val_auroc}}.dump()
              << "\n";
  } else {
    std::cout << *sha << "  " << a.out << "\n";
  }
  return 0;
}

}  // namespace fedtune::site
