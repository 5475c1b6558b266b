// Training throughput of the LoRA fine-tuning step (forward + backward +
// AdamW) for the backbones fedtune targets, against the same step in Python
// torch measured in the same invocation.
//
//   train_throughput [--device cpu|cuda] [--cases tiny@224:32,base16@224:8,base14@518:4]
//                    [--steps N] [--warmup N] [--repeats N] [--threads N] [--python PATH] [--no-python]
//
// With --repeats N the Python and C++ measurements alternate N times and the
// medians are reported, so a noisy machine affects both sides alike.
//
// Each case is MODEL@SIZE:BATCH with MODEL one of tiny (ViT-Ti/16), base16
// (ViT-B/16, MAE) and base14 (ViT-B/14, RAD-DINO). LoRA r=16 on query+value,
// a 17-finding CLS+mean head; on CUDA bfloat16 activations and frozen weights
// (fp32 trainable weights), against Python with bf16 autocast. Prints a table and
// writes nothing else.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/model/torch_runtime.h"
#include "common/model/vit.h"
#include "tests/testing/run_command.h"

namespace fm = fedtune::model;

namespace {

struct Case {
  std::string name;
  fm::ViTConfig vit;
  int batch;
};

fm::ViTConfig Backbone(const std::string& model, int image) {
  fm::ViTConfig c;
  if (model == "tiny") {
    c = fm::ViTPreset("vit-tiny/16").value();
  } else if (model == "base16") {
    c = fm::ViTPreset("mae-base/16").value();
  } else if (model == "base14") {
    c = fm::ViTPreset("rad-dino").value();
  } else {
    std::cerr << "unknown model " << model << " (use tiny, base16, base14)\n";
    std::exit(2);
  }
  c.image_size = image;
  return c;
}

std::vector<Case> ParseCases(const std::string& spec) {
  std::vector<Case> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto at = item.find('@'), colon = item.find(':');
    if (at == std::string::npos || colon == std::string::npos) {
      std::cerr << "bad case \"" << item << "\" (want MODEL@SIZE:BATCH)\n";
      std::exit(2);
    }
    const std::string model = item.substr(0, at);
    const int image = std::stoi(item.substr(at + 1, colon - at - 1));
    out.push_back({item, Backbone(model, image), std::stoi(item.substr(colon + 1))});
  }
  return out;
}

double MeasureCpp(const Case& c, torch::Device device, int steps, int warmup) {
  fm::ModelSpec spec;
  spec.vit = c.vit;
  spec.findings.assign(17, "finding");
  spec.lora.rank = 16;
  spec.lora.alpha = 16;
  spec.lora.dropout = 0;
  torch::manual_seed(0);
  fm::ViTClassifier model(spec);
  model->ApplyMethod();
  fm::PlaceOnDevice(model, device, /*bf16_frozen=*/device.is_cuda());
  model->train();
  std::vector<torch::Tensor> params;
  for (auto& p : model->parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4));
  torch::Tensor x = torch::rand({c.batch, 1, c.vit.image_size, c.vit.image_size}, device);
  torch::Tensor y = (torch::rand({c.batch, 17}, device) < 0.3).to(torch::kFloat32);
  auto step = [&] {
    auto loss = torch::binary_cross_entropy_with_logits(model->forward(x), y);
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  for (int i = 0; i < warmup; ++i) step();
  if (device.is_cuda()) torch::cuda::synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) step();
  if (device.is_cuda()) torch::cuda::synchronize();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return c.batch * steps / dt;
}

// Runs the Python reference once over every case; name -> images/s.
std::map<std::string, double> MeasurePython(const std::string& python, const std::string& device_name,
                                            const std::vector<Case>& parsed, int threads, int steps, int warmup,
                                            std::string* impl) {
  std::map<std::string, double> py;
  nlohmann::json cfg;
  cfg["threads"] = threads;
  for (const Case& c : parsed) {
    cfg["cases"].push_back({{"name", c.name}, {"hidden", c.vit.hidden}, {"layers", c.vit.layers},
                            {"heads", c.vit.heads}, {"mlp", c.vit.mlp_dim}, {"patch", c.vit.patch_size},
                            {"image", c.vit.image_size}, {"layer_scale", c.vit.layer_scale},
                            {"batch", c.batch}, {"rank", 16}, {"steps", steps}, {"warmup", warmup}});
  }
  const std::string cfg_path = "/tmp/fedtune_train_throughput_" + std::to_string(getpid()) + ".json";
  std::FILE* f = std::fopen(cfg_path.c_str(), "w");
  std::fputs(cfg.dump().c_str(), f);
  std::fclose(f);
  std::string out;
  const int rc = fedtune::testing::RunCommand(
      python + " " + FEDTUNE_SOURCE_DIR + "/tests/bench/train_throughput.py " + device_name + " " + cfg_path, &out);
  std::remove(cfg_path.c_str());
  try {
    auto j = nlohmann::json::parse(out.substr(out.rfind("{\"impl\"")));
    *impl = j["impl"].get<std::string>() + " " + j["torch"].get<std::string>();
    for (const auto& r : j["results"]) py[r["name"].get<std::string>()] = r["images_per_second"].get<double>();
  } catch (const std::exception&) {
    std::cerr << "python reference failed (exit " << rc << "):\n" << out << "\n";
  }
  return py;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  std::string device_name = "cpu", cases = "tiny@224:32,base16@224:8,base14@518:2", python = FEDTUNE_PYTHON3;
  int steps = 5, warmup = 2, threads = 0, repeats = 1;
  bool run_python = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--device") device_name = value();
    else if (a == "--cases") cases = value();
    else if (a == "--steps") steps = std::stoi(value());
    else if (a == "--warmup") warmup = std::stoi(value());
    else if (a == "--threads") threads = std::stoi(value());
    else if (a == "--repeats") repeats = std::max(1, std::stoi(value()));
    else if (a == "--python") python = value();
    else if (a == "--no-python") run_python = false;
    else {
      std::cerr << "usage: train_throughput [--device cpu|cuda] [--cases MODEL@SIZE:BATCH,...] [--steps N] "
                   "[--warmup N] [--repeats N] [--threads N] [--python PATH] [--no-python]\n";
      return a == "--help" ? 0 : 2;
    }
  }
  const torch::Device device = device_name == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const fm::TorchRuntime rt = fm::ConfigureTorchRuntime(threads);
  const std::vector<Case> parsed = ParseCases(cases);

  std::string py_impl = "not run";
  std::map<std::string, std::vector<double>> py_runs, cpp_runs;
  for (int r = 0; r < repeats; ++r) {
    if (run_python) {
      for (const auto& [name, v] : MeasurePython(python, device_name, parsed, rt.threads, steps, warmup, &py_impl)) {
        py_runs[name].push_back(v);
      }
    }
    for (const Case& c : parsed) cpp_runs[c.name].push_back(MeasureCpp(c, device, steps, warmup));
  }

  std::printf("device %s, LibTorch %s, %d CPU threads, %d timed steps after %d warm-up, median of %d\n",
              device.str().c_str(), rt.torch_version.c_str(), rt.threads, steps, warmup, repeats);
  std::printf("reference: %s\n", py_impl.c_str());
  std::printf("%-18s %6s %14s %14s %8s\n", "case", "batch", "C++ img/s", "Python img/s", "C++/Py");
  for (const Case& c : parsed) {
    const double cpp = Median(cpp_runs[c.name]);
    const auto it = py_runs.find(c.name);
    if (it != py_runs.end()) {
      const double py = Median(it->second);
      std::printf("%-18s %6d %14.2f %14.2f %8.2f\n", c.name.c_str(), c.batch, cpp, py, cpp / py);
    } else {
      std::printf("%-18s %6d %14.2f %14s %8s\n", c.name.c_str(), c.batch, cpp, "-", "-");
    }
  }
  return 0;
}
