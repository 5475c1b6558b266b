// infer_throughput: the site inference service (site-agent/inference) under
// 1, 8 and 32 concurrent Open Inference Protocol v2 gRPC clients, against
// Python torch serving a ViT of the same shape over the same protocol
// (tests/bench/infer_throughput.py), measured in the same run with the same
// load generator. Each client sends one image per request (raw FP32
// [1, 1, S, S]) as fast as it is answered.
//
// usage: infer_throughput [--arch vit-tiny/16] [--image 224] [--clients 1,8,32] [--seconds 10]
//                         [--max-batch 8] [--delay-ms 5] [--threads 0] [--device cpu]
//                         [--python PATH] [--no-python] [--python-batch N]
// Prints a Markdown table and one JSON line per measurement.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/fl/task_spec.h"
#include "common/model/classifier.h"
#include "inference/v2/grpc_predict_v2.grpc.pb.h"
#include "site-agent/inference/inference_service.h"
#include "site-agent/inference/served_model.h"

namespace {

namespace fs = std::filesystem;
using namespace fedtune;
using nlohmann::json;

struct Options {
  std::string arch = "vit-tiny/16";
  int image = 224;
  std::vector<int> clients = {1, 8, 32};
  double seconds = 10;
  int max_batch = 8;
  int delay_ms = 5;
  int threads = 0;
  std::string device = "cpu";
  std::string python = FEDTUNE_PYTHON3;
  bool with_python = true;
  int python_batch = 1;
  int findings = 17;
};

struct Measurement {
  double images_per_second = 0;
  double p50_ms = 0, p99_ms = 0;
  int64_t requests = 0, errors = 0;
};

Measurement Load(const std::string& address, int clients, double seconds, int side) {
  std::vector<std::vector<double>> latencies(clients);
  std::atomic<int64_t> errors{0};
  std::atomic<bool> stop{false};
  std::string image(static_cast<size_t>(side) * side * 4, '\0');
  {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(0, 1);
    for (size_t i = 0; i < image.size(); i += 4) {
      const float v = u(rng);
      std::memcpy(&image[i], &v, 4);
    }
  }
  std::vector<std::thread> threads;
  const auto start = std::chrono::steady_clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      grpc::ChannelArguments args;
      args.SetInt("fedtune.client", c);  // one connection per client, as separate clients have
      auto stub = ::inference::GRPCInferenceService::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
      ::inference::ModelInferRequest req;
      req.set_model_name("fedtune");
      auto* in = req.add_inputs();
      in->set_name("image");
      in->set_datatype("FP32");
      for (int64_t d : {int64_t{1}, int64_t{1}, int64_t{side}, int64_t{side}}) in->add_shape(d);
      req.add_raw_input_contents(image);
      while (!stop) {
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
        ::inference::ModelInferResponse resp;
        const auto t0 = std::chrono::steady_clock::now();
        const grpc::Status st = stub->ModelInfer(&ctx, req, &resp);
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (!st.ok()) {
          ++errors;
          continue;
        }
        latencies[c].push_back(ms);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<double> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  Measurement m;
  m.requests = static_cast<int64_t>(all.size());
  m.errors = errors;
  m.images_per_second = all.size() / elapsed;
  if (!all.empty()) {
    m.p50_ms = all[all.size() / 2];
    m.p99_ms = all[std::min(all.size() - 1, all.size() * 99 / 100)];
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--arch") o.arch = value();
    else if (a == "--image") o.image = std::stoi(value());
    else if (a == "--clients") {
      o.clients.clear();
      for (auto s : absl::StrSplit(value(), ',')) o.clients.push_back(std::stoi(std::string(s)));
    } else if (a == "--seconds") o.seconds = std::stod(value());
    else if (a == "--max-batch") o.max_batch = std::stoi(value());
    else if (a == "--delay-ms") o.delay_ms = std::stoi(value());
    else if (a == "--threads") o.threads = std::stoi(value());
    else if (a == "--device") o.device = value();
    else if (a == "--python") o.python = value();
    else if (a == "--no-python") o.with_python = false;
    else if (a == "--python-batch") o.python_batch = std::stoi(value());
    else {
      std::cerr << "usage: infer_throughput [--arch A] [--image S] [--clients 1,8,32] [--seconds N] [--max-batch N]\n"
                   "  [--delay-ms N] [--threads N] [--device cpu|cuda] [--python PATH] [--no-python] [--python-batch N]\n";
      return 2;
    }
  }
  const std::string dir = (fs::temp_directory_path() / ("infer_throughput_" + std::to_string(getpid()))).string();
  fs::create_directories(dir);

  // The model as a site holds it after a promotion.
  v1::TrainConfig config;
  for (int f = 0; f < o.findings; ++f) config.add_findings("finding-" + std::to_string(f));
  config.set_method("lora");
  config.set_lora_rank(16);
  config.set_lora_alpha(16);
  config.add_lora_targets("query");
  config.add_lora_targets("value");
  config.set_image_size(o.image);
  auto spec = fl::ModelSpecFor(o.arch, config);
  if (!spec.ok()) {
    std::cerr << spec.status() << "\n";
    return 1;
  }
  model::ClassifierOptions mo;
  mo.device = o.device;
  mo.threads = o.threads;
  auto first = model::Classifier::Create(*spec, mo);
  if (!first.ok() || !(*first)->SaveBackbone(dir + "/backbone.safetensors").ok()) {
    std::cerr << "cannot build the model\n";
    return 1;
  }
  const std::string weights = *SerializeSafetensors(
      *(*first)->GlobalState(), {{"format", "pt"}, {fl::kGlobalStateFormatKey, fl::kGlobalStateFormat}});
  first->reset();
  v1::ServedModel served;
  served.mutable_promotion()->set_job_id("bench");
  served.mutable_promotion()->set_version(1);
  served.mutable_promotion()->set_sha256(Sha256Hex(weights));
  served.mutable_model()->set_backbone_sha256(*Sha256FileHex(dir + "/backbone.safetensors"));
  served.mutable_model()->set_backbone_architecture(o.arch);
  *served.mutable_model()->mutable_config() = config;
  if (auto st = site::InstallServedModel(dir + "/ws", served, weights); !st.ok()) {
    std::cerr << st << "\n";
    return 1;
  }
  site::ServingModelOptions so;
  so.backbone_path = dir + "/backbone.safetensors";
  so.backbone_sha256 = served.model().backbone_sha256();
  so.device = o.device;
  so.threads = o.threads;
  auto held = site::LoadHeldModel(dir + "/ws", "current");
  auto serving = site::ServingModel::Load(**held, so);
  if (!serving.ok()) {
    std::cerr << serving.status() << "\n";
    return 1;
  }
  site::InferenceServiceOptions io;
  io.grpc_listen = "127.0.0.1:0";
  io.max_batch_size = o.max_batch;
  io.max_queue_delay = std::chrono::milliseconds(o.delay_ms);
  auto service = site::InferenceService::Start(io, nullptr);
  if (!service.ok()) {
    std::cerr << service.status() << "\n";
    return 1;
  }
  (*service)->SetModel(*serving);
  const std::string fedtune_address = "127.0.0.1:" + std::to_string((*service)->grpc_port());
  Load(fedtune_address, 1, 1, o.image);  // warm

  // The Python reference, same shape.
  pid_t python = 0;
  std::string python_address;
  if (o.with_python) {
    const model::ViTConfig& v = spec->vit;
    json c{{"hidden", v.hidden},   {"layers", v.layers},           {"heads", v.heads},       {"mlp", v.mlp_dim},
           {"patch", v.patch_size}, {"image", v.image_size},        {"layer_scale", v.layer_scale},
           {"rank", 16},           {"findings", o.findings},       {"threads", o.threads},   {"device", o.device},
           {"max_batch", o.python_batch}, {"delay_ms", o.delay_ms}};
    std::ofstream(dir + "/config.json") << c.dump();
    fs::create_directories(dir + "/stubs");
    python = fork();
    if (python == 0) {
      const std::string script = std::string(FEDTUNE_SOURCE_DIR) + "/tests/bench/infer_throughput.py";
      execl(o.python.c_str(), o.python.c_str(), script.c_str(), (dir + "/config.json").c_str(),
            (dir + "/python.port").c_str(), (dir + "/stubs").c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 600 && python_address.empty(); ++i) {
      auto port = ReadFileBytes(dir + "/python.port");
      if (port.ok() && !port->empty()) python_address = "127.0.0.1:" + port->substr(0, port->find('\n'));
      else std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (python_address.empty()) std::cerr << "the Python reference did not start; measuring fedtune alone\n";
    else Load(python_address, 1, 1, o.image);  // warm
  }

  std::cout << "| clients | fedtune img/s | p50 ms | p99 ms | Python img/s | p50 ms | p99 ms | fedtune/Python |\n"
               "|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (int clients : o.clients) {
    const Measurement f = Load(fedtune_address, clients, o.seconds, o.image);
    Measurement p;
    if (!python_address.empty()) p = Load(python_address, clients, o.seconds, o.image);
    std::printf("| %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f |\n", clients, f.images_per_second, f.p50_ms,
                f.p99_ms, p.images_per_second, p.p50_ms, p.p99_ms,
                p.images_per_second > 0 ? f.images_per_second / p.images_per_second : 0.0);
    std::cerr << json{{"clients", clients},
                      {"fedtune", {{"images_per_second", f.images_per_second}, {"p50_ms", f.p50_ms},
                                   {"p99_ms", f.p99_ms}, {"errors", f.errors}}},
                      {"python", {{"images_per_second", p.images_per_second}, {"p50_ms", p.p50_ms},
                                  {"p99_ms", p.p99_ms}, {"errors", p.errors}}}}
                     .dump()
              << "\n";
  }
  if (python > 0) {
    kill(python, SIGTERM);
    waitpid(python, nullptr, 0);
  }
  (*service)->Stop();
  fs::remove_all(dir);
  return 0;
}
