// `fedtune backbone init`: a random backbone, offline.
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

void SetupBackbone(CLI::App& app, const Globals& g, Args& a, int& code) {
  auto* backbone = app.add_subcommand(
      "backbone", "Base weights every site holds: a random backbone (init); one pretrained on public data is "
                  "made where that data is, with fedtune-site backbone pretrain");
  backbone->require_subcommand(1);
  backbone->footer("Example:\n  fedtune backbone init --out backbone.safetensors   # then sha256sum it into job.toml");
  auto* init = backbone->add_subcommand(
      "init", "Write a randomly initialized backbone (Hugging Face layout) and print its SHA-256; give every site "
              "the same file and put the hash in the job's [backbone] sha256");
  init->add_option("--arch", a.arch, "preset: vit-tiny/16, vit-small/16, mae-base/16, rad-dino, dinov2-base/14")
      ->capture_default_str();
  init->add_option("--seed", a.seed, "random seed")->capture_default_str();
  init->add_option("--image-size", a.image_size, "input size (default: the preset's)");
  init->add_option("--out", a.out, "output .safetensors file")->required();
  init->footer("Example:\n  fedtune backbone init --arch vit-tiny/16 --image-size 64 --out backbone.safetensors");
  init->callback([&] { code = BackboneInit(a.arch, a.seed, a.image_size, a.out, g.json); });
}

}  // namespace fedtune::cli
