#include "site-agent/inference/inference_service.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/core/status.h"
#include "common/core/version.h"
#include "common/http/http_server.h"
#include "fedtune/v1/inference.grpc.pb.h"
#include "inference/v2/grpc_predict_v2.grpc.pb.h"

namespace fedtune::site {
namespace {

namespace oip = ::inference;
using nlohmann::json;

constexpr char kInputName[] = "image";
constexpr char kProbabilities[] = "probabilities";
constexpr char kPositive[] = "positive";
constexpr int kMaxSide = 4096;

// Request latency buckets: 1 ms .. ~33 s.
const std::vector<double>& LatencyBuckets() {
  static const std::vector<double> b = ExponentialBuckets(0.001, 2, 16);
  return b;
}

}  // namespace

struct InferenceService::Impl {
  InferenceServiceOptions options;
  MetricsRegistry* metrics = nullptr;
  std::unique_ptr<Batcher> batcher;
  mutable std::mutex mu;
  std::shared_ptr<const ServingModel> model;
  std::unique_ptr<http::Server> http;
  std::vector<std::unique_ptr<grpc::Service>> services;  // outlive the server
  std::unique_ptr<grpc::Server> grpc_server;
  int grpc_port = 0;
  std::mutex decode_mu;
  std::condition_variable decode_cv;
  int decoding = 0;

  std::shared_ptr<const ServingModel> Current() const {
    std::lock_guard<std::mutex> lock(mu);
    return model;
  }

  // The model a request names: NOT_FOUND for another name, or a version
  // this site does not serve; UNAVAILABLE before any promotion arrived.
  absl::StatusOr<std::shared_ptr<const ServingModel>> Resolve(const std::string& name,
                                                              const std::string& version) const {
    if (name != options.model_name) {
      return absl::NotFoundError(absl::StrCat("no model named '", name, "' here; this site serves '",
                                              options.model_name, "'"));
    }
    int wanted = -1;
    if (!version.empty() && (!absl::SimpleAtoi(version, &wanted) || wanted < 0)) {
      return absl::NotFoundError(absl::StrCat("version ", version, " is not served"));
    }
    return Served(wanted);
  }

  // The model in use; `version` >= 0 must be its version (NOT_FOUND
  // otherwise). UNAVAILABLE before any promotion arrived.
  absl::StatusOr<std::shared_ptr<const ServingModel>> Served(int version) const {
    std::shared_ptr<const ServingModel> m = Current();
    if (m == nullptr) {
      return absl::UnavailableError("no model is served yet: the federation has not promoted one this site holds "
                                    "(fedtune model promote)");
    }
    if (version >= 0 && version != m->promotion().version()) {
      return absl::NotFoundError(absl::StrCat("version ", version, " is not served; this site serves version ",
                                              m->promotion().version()));
    }
    return m;
  }

  void Count(const char* protocol, const char* api, const absl::Status& st, double seconds) {
    if (metrics == nullptr) return;
    const char* outcome = st.ok()                                           ? "ok"
                          : st.code() == absl::StatusCode::kInvalidArgument ? "invalid"
                          : st.code() == absl::StatusCode::kNotFound        ? "not_found"
                          : st.code() == absl::StatusCode::kUnavailable     ? "unavailable"
                                                                            : "error";
    metrics
        ->GetCounter("fedtune_site_inference_requests_total", "Inference requests by protocol, API and outcome",
                     {{"protocol", protocol}, {"api", api}, {"outcome", outcome}})
        .Add();
    metrics
        ->GetHistogram("fedtune_site_inference_request_seconds", "Inference request latency (decode, queue, model)",
                       LatencyBuckets(), {{"protocol", protocol}, {"api", api}})
        .Observe(seconds);
  }
};

namespace {

using Impl = InferenceService::Impl;

double Since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The FP32 values of the one input: from raw_input_contents (little-endian)
// or from contents.fp32_contents.
absl::StatusOr<std::vector<float>> InputValues(const oip::ModelInferRequest& req, int64_t count) {
  const auto& in = req.inputs(0);
  std::vector<float> v;
  if (req.raw_input_contents_size() > 0) {
    if (req.raw_input_contents_size() != 1) {
      return absl::InvalidArgumentError("raw_input_contents must hold exactly one entry per input (one input here)");
    }
    const std::string& raw = req.raw_input_contents(0);
    if (static_cast<int64_t>(raw.size()) != count * 4) {
      return absl::InvalidArgumentError(absl::StrCat("raw input of ", raw.size(), " bytes; shape ",
                                                     "needs ", count * 4, " (FP32)"));
    }
    v.resize(static_cast<size_t>(count));
    std::memcpy(v.data(), raw.data(), raw.size());  // x86-64 and aarch64 are little-endian, as the protocol
  } else {
    if (in.contents().fp32_contents_size() != count) {
      return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "' holds ", in.contents().fp32_contents_size(),
                                                     " FP32 values; its shape needs ", count));
    }
    v.assign(in.contents().fp32_contents().begin(), in.contents().fp32_contents().end());
  }
  for (float x : v) {
    if (!(x >= 0.0f && x <= 1.0f)) {
      return absl::InvalidArgumentError("input values must lie in [0, 1] (grey levels, 0 = black)");
    }
  }
  return v;
}

absl::StatusOr<oip::ModelInferResponse> InferOn(Impl& impl, const oip::ModelInferRequest& req) {
  ASSIGN_OR_RETURN(std::shared_ptr<const ServingModel> model, impl.Resolve(req.model_name(), req.model_version()));
  if (req.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("expected one input ('", kInputName, "'), got ", req.inputs_size()));
  }
  const auto& in = req.inputs(0);
  if (in.datatype() != "FP32") {
    return absl::InvalidArgumentError(absl::StrCat("input '", in.name(), "' has datatype ", in.datatype(),
                                                   "; expected FP32"));
  }
  if (in.shape_size() != 4 || in.shape(1) != 1 || in.shape(0) < 1 || in.shape(2) != in.shape(3) ||
      in.shape(2) < 16 || in.shape(2) > kMaxSide) {
    std::string shape;
    for (int64_t d : in.shape()) absl::StrAppend(&shape, shape.empty() ? "" : ", ", d);
    return absl::InvalidArgumentError(absl::StrCat("input shape [", shape, "]: expected [N, 1, S, S] with N >= 1 and ",
                                                   "16 <= S <= ", kMaxSide, " (this model's S is ",
                                                   model->image_size(), ")"));
  }
  bool want_probabilities = req.outputs_size() == 0, want_positive = req.outputs_size() == 0;
  for (const auto& o : req.outputs()) {
    if (o.name() == kProbabilities) {
      want_probabilities = true;
    } else if (o.name() == kPositive) {
      want_positive = true;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown output '", o.name(), "': this model has '",
                                                     kProbabilities, "' and '", kPositive, "'"));
    }
  }
  const int64_t n = in.shape(0), side = in.shape(2);
  // Bounded before any product is formed: N by max_request_images, S above.
  if (n > impl.options.max_request_images) {
    return absl::InvalidArgumentError(absl::StrCat("the input holds ", n, " images; at most ",
                                                   impl.options.max_request_images, " per request"));
  }
  if (n * side * side * 4 > impl.options.max_request_bytes) {
    return absl::InvalidArgumentError("the input is larger than [inference] max_request_mb allows");
  }
  ASSIGN_OR_RETURN(std::vector<float> values, InputValues(req, n * side * side));
  ASSIGN_OR_RETURN(std::vector<float> probs,
                   impl.batcher->Run(model, std::move(values), static_cast<int>(n), static_cast<int>(side)));

  const int64_t f = model->num_outputs();
  const bool raw = req.raw_input_contents_size() > 0;
  // Which column is which finding: a JSON list in each output's parameters.
  ::inference::InferParameter findings;
  findings.set_string_param(json(model->findings()).dump());
  oip::ModelInferResponse resp;
  resp.set_model_name(impl.options.model_name);
  resp.set_model_version(std::to_string(model->promotion().version()));
  resp.set_id(req.id());
  if (want_probabilities) {
    auto* out = resp.add_outputs();
    out->set_name(kProbabilities);
    out->set_datatype("FP32");
    out->add_shape(n);
    out->add_shape(f);
    (*out->mutable_parameters())["findings"] = findings;
    if (raw) {
      resp.add_raw_output_contents(std::string(reinterpret_cast<const char*>(probs.data()), probs.size() * 4));
    } else {
      out->mutable_contents()->mutable_fp32_contents()->Add(probs.begin(), probs.end());
    }
  }
  if (want_positive) {
    auto* out = resp.add_outputs();
    out->set_name(kPositive);
    out->set_datatype("BOOL");
    out->add_shape(n);
    out->add_shape(f);
    (*out->mutable_parameters())["findings"] = findings;
    std::string bytes(probs.size(), '\0');
    for (size_t i = 0; i < probs.size(); ++i) {
      const bool positive = probs[i] >= model->thresholds()[i % f];
      bytes[i] = positive ? 1 : 0;
      if (!raw) out->mutable_contents()->add_bool_contents(positive);
    }
    if (raw) resp.add_raw_output_contents(std::move(bytes));
  }
  return resp;
}

// At most InferenceServiceOptions::max_concurrent_decodes DICOM decodes at once.
class DecodeSlot {
 public:
  explicit DecodeSlot(Impl& impl) : impl_(impl) {
    std::unique_lock<std::mutex> lock(impl_.decode_mu);
    impl_.decode_cv.wait(lock, [&] { return impl_.decoding < std::max(1, impl_.options.max_concurrent_decodes); });
    ++impl_.decoding;
  }
  ~DecodeSlot() {
    {
      std::lock_guard<std::mutex> lock(impl_.decode_mu);
      --impl_.decoding;
    }
    impl_.decode_cv.notify_one();
  }

 private:
  Impl& impl_;
};

absl::StatusOr<v1::PredictResponse> PredictOn(Impl& impl, std::string_view dicom, int model_version) {
  ASSIGN_OR_RETURN(std::shared_ptr<const ServingModel> model, impl.Served(model_version));
  ingest::ModelInput image;
  {
    // Decoding holds a whole radiograph (up to max_decoded_mb): a few at a time.
    DecodeSlot slot(impl);
    ASSIGN_OR_RETURN(image, ingest::DecodeForModel(dicom, impl.options.dicom));
  }
  ASSIGN_OR_RETURN(std::vector<float> probs, impl.batcher->Run(model, std::move(image.pixels), 1, image.size));
  v1::PredictResponse resp;
  resp.set_job_id(model->promotion().job_id());
  resp.set_model_version(model->promotion().version());
  resp.set_model_sha256(model->promotion().sha256());
  for (size_t i = 0; i < probs.size(); ++i) {
    auto* f = resp.add_findings();
    f->set_finding(model->findings()[i]);
    f->set_probability(probs[i]);
    f->set_threshold(static_cast<float>(model->thresholds()[i]));
    f->set_positive(probs[i] >= model->thresholds()[i]);
  }
  return resp;
}

json TensorMetadataJson(const std::string& name, const std::string& datatype, std::vector<int64_t> shape) {
  return json{{"name", name}, {"datatype", datatype}, {"shape", shape}};
}

// ModelMetadata for the model `m` serves (shape with -1 for N).
oip::ModelMetadataResponse MetadataOf(const Impl& impl, const ServingModel& m) {
  oip::ModelMetadataResponse r;
  r.set_name(impl.options.model_name);
  r.add_versions(std::to_string(m.promotion().version()));
  r.set_platform("fedtune_libtorch");
  auto* in = r.add_inputs();
  in->set_name(kInputName);
  in->set_datatype("FP32");
  for (int64_t d : {int64_t{-1}, int64_t{1}, int64_t{m.image_size()}, int64_t{m.image_size()}}) in->add_shape(d);
  for (const char* name : {kProbabilities, kPositive}) {
    auto* out = r.add_outputs();
    out->set_name(name);
    out->set_datatype(name == kProbabilities ? "FP32" : "BOOL");
    out->add_shape(-1);
    out->add_shape(m.num_outputs());
  }
  return r;
}

// ---- gRPC ----

class OipService final : public oip::GRPCInferenceService::Service {
 public:
  explicit OipService(Impl* impl) : impl_(impl) {}

  grpc::Status ServerLive(grpc::ServerContext*, const oip::ServerLiveRequest*, oip::ServerLiveResponse* r) override {
    r->set_live(true);
    return grpc::Status::OK;
  }
  grpc::Status ServerReady(grpc::ServerContext*, const oip::ServerReadyRequest*,
                           oip::ServerReadyResponse* r) override {
    r->set_ready(impl_->Current() != nullptr);
    return grpc::Status::OK;
  }
  grpc::Status ModelReady(grpc::ServerContext*, const oip::ModelReadyRequest* req,
                          oip::ModelReadyResponse* r) override {
    r->set_ready(impl_->Resolve(req->name(), req->version()).ok());
    return grpc::Status::OK;
  }
  grpc::Status ServerMetadata(grpc::ServerContext*, const oip::ServerMetadataRequest*,
                              oip::ServerMetadataResponse* r) override {
    r->set_name("fedtune-site");
    r->set_version(FedtuneVersion());
    return grpc::Status::OK;
  }
  grpc::Status ModelMetadata(grpc::ServerContext*, const oip::ModelMetadataRequest* req,
                             oip::ModelMetadataResponse* r) override {
    auto m = impl_->Resolve(req->name(), req->version());
    if (!m.ok()) return net::ToGrpc(m.status());
    *r = MetadataOf(*impl_, **m);
    return grpc::Status::OK;
  }
  grpc::Status ModelInfer(grpc::ServerContext*, const oip::ModelInferRequest* req,
                          oip::ModelInferResponse* r) override {
    const auto start = std::chrono::steady_clock::now();
    auto resp = InferOn(*impl_, *req);
    impl_->Count("grpc", "oip", resp.status(), Since(start));
    if (!resp.ok()) return net::ToGrpc(resp.status());
    *r = std::move(*resp);
    return grpc::Status::OK;
  }

 private:
  Impl* impl_;
};

class DicomService final : public v1::Inference::Service {
 public:
  explicit DicomService(Impl* impl) : impl_(impl) {}
  grpc::Status Predict(grpc::ServerContext*, const v1::PredictRequest* req, v1::PredictResponse* r) override {
    const auto start = std::chrono::steady_clock::now();
    // proto3 has no "unset": 0 could be a version, so only negatives mean "the latest".
    auto resp = PredictOn(*impl_, req->dicom(), req->model_version());
    impl_->Count("grpc", "dicom", resp.status(), Since(start));
    if (!resp.ok()) return net::ToGrpc(resp.status());
    *r = std::move(*resp);
    return grpc::Status::OK;
  }

 private:
  Impl* impl_;
};

// ---- REST ----

http::Response Json(int status, const json& body) {
  http::Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = body.dump();
  return r;
}

// The protocol's error object: {"error": "..."}.
http::Response JsonError(const absl::Status& st) { return Json(http::HttpStatusFor(st.code()), {{"error", std::string(st.message())}}); }

// Nested arrays (as deep as a tensor's shape, at most kMaxDepth) or a flat
// list of numbers -> values. The depth bound keeps a hostile body from
// recursing through the stack.
constexpr int kMaxDepth = 8;
absl::Status Flatten(const json& data, std::vector<float>* out, int64_t limit, int depth = 0) {
  if (data.is_array()) {
    if (depth >= kMaxDepth) return absl::InvalidArgumentError("input data nests deeper than its shape");
    for (const json& x : data) RETURN_IF_ERROR(Flatten(x, out, limit, depth + 1));
    return absl::OkStatus();
  }
  if (!data.is_number()) return absl::InvalidArgumentError("input data must be numbers (FP32)");
  if (static_cast<int64_t>(out->size()) >= limit) return absl::InvalidArgumentError("input data exceeds its shape");
  out->push_back(data.get<float>());
  return absl::OkStatus();
}

// The JSON request of the REST binding -> the gRPC message.
absl::StatusOr<oip::ModelInferRequest> ParseInferJson(const std::string& body, const std::string& name,
                                                      const std::string& version) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError("the request body is not a JSON object");
  oip::ModelInferRequest req;
  req.set_model_name(name);
  req.set_model_version(version);
  if (j.contains("id")) {
    if (!j["id"].is_string()) return absl::InvalidArgumentError("'id' must be a string");
    req.set_id(j["id"].get<std::string>());
  }
  if (!j.contains("inputs") || !j["inputs"].is_array()) {
    return absl::InvalidArgumentError("the request needs 'inputs': [{\"name\", \"shape\", \"datatype\", \"data\"}]");
  }
  for (const json& in : j["inputs"]) {
    if (!in.is_object() || !in.contains("name") || !in["name"].is_string() || !in.contains("shape") ||
        !in["shape"].is_array() || !in.contains("datatype") || !in["datatype"].is_string() || !in.contains("data")) {
      return absl::InvalidArgumentError("each input needs 'name', 'shape', 'datatype' and 'data'");
    }
    auto* t = req.add_inputs();
    t->set_name(in["name"].get<std::string>());
    t->set_datatype(in["datatype"].get<std::string>());
    int64_t count = 1;
    for (const json& d : in["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0 || d.get<int64_t>() > (int64_t{1} << 31)) {
        return absl::InvalidArgumentError("shape entries must be non-negative integers");
      }
      t->add_shape(d.get<int64_t>());
      const int64_t cap = int64_t{1} << 40, dim = d.get<int64_t>();
      count = dim > 0 && count > cap / dim ? cap : std::min(count * dim, cap);
    }
    if (t->datatype() != "FP32") continue;  // refused with its reason by InferOn
    std::vector<float> values;
    RETURN_IF_ERROR(Flatten(in["data"], &values, count));
    t->mutable_contents()->mutable_fp32_contents()->Add(values.begin(), values.end());
  }
  if (j.contains("outputs")) {
    if (!j["outputs"].is_array()) return absl::InvalidArgumentError("'outputs' must be a list");
    for (const json& o : j["outputs"]) {
      if (!o.is_object() || !o.contains("name") || !o["name"].is_string()) {
        return absl::InvalidArgumentError("each requested output needs a 'name'");
      }
      req.add_outputs()->set_name(o["name"].get<std::string>());
    }
  }
  return req;
}

json InferResponseJson(const oip::ModelInferResponse& r) {
  json outputs = json::array();
  for (const auto& o : r.outputs()) {
    json t{{"name", o.name()}, {"datatype", o.datatype()}, {"shape", std::vector<int64_t>(o.shape().begin(), o.shape().end())}};
    if (auto p = o.parameters().find("findings"); p != o.parameters().end()) {
      t["parameters"] = {{"findings", p->second.string_param()}};
    }
    if (o.datatype() == "BOOL") {
      t["data"] = std::vector<bool>(o.contents().bool_contents().begin(), o.contents().bool_contents().end());
    } else {
      t["data"] = std::vector<float>(o.contents().fp32_contents().begin(), o.contents().fp32_contents().end());
    }
    outputs.push_back(std::move(t));
  }
  json j{{"model_name", r.model_name()}, {"model_version", r.model_version()}, {"outputs", std::move(outputs)}};
  if (!r.id().empty()) j["id"] = r.id();
  return j;
}

json PredictJson(const v1::PredictResponse& r) {
  json findings = json::array();
  for (const auto& f : r.findings()) {
    findings.push_back({{"finding", f.finding()},
                        {"probability", f.probability()},
                        {"threshold", f.threshold()},
                        {"positive", f.positive()}});
  }
  return json{{"job_id", r.job_id()},
              {"model_version", r.model_version()},
              {"model_sha256", r.model_sha256()},
              {"findings", std::move(findings)}};
}

void AddRestRoutes(Impl* impl, http::Server& s) {
  // The same clients may scrape the service (Prometheus on the hospital's network).
  if (impl->metrics != nullptr) s.ServeMetrics(impl->metrics);
  // Health: the status code is the answer (200 true, 400 false).
  s.Get("/v2/health/live", [](const http::Request&) { return Json(200, {{"live", true}}); });
  s.Get("/v2/health/ready", [impl](const http::Request&) {
    const bool ready = impl->Current() != nullptr;
    return Json(ready ? 200 : 400, {{"ready", ready}});
  });
  s.Get("/v2", [](const http::Request&) {
    return Json(200, {{"name", "fedtune-site"}, {"version", FedtuneVersion()}, {"extensions", json::array()}});
  });
  const std::string model = "/v2/models/([^/]+)(?:/versions/([^/]+))?";
  s.Get(model, [impl](const http::Request& req) {
    auto m = impl->Resolve(req.captures[0], req.captures[1]);
    if (!m.ok()) return JsonError(m.status());
    const oip::ModelMetadataResponse md = MetadataOf(*impl, **m);
    auto tensors = [](const auto& list) {
      json a = json::array();
      for (const auto& t : list) {
        a.push_back(TensorMetadataJson(t.name(), t.datatype(), std::vector<int64_t>(t.shape().begin(), t.shape().end())));
      }
      return a;
    };
    return Json(200, {{"name", md.name()},
                      {"versions", std::vector<std::string>(md.versions().begin(), md.versions().end())},
                      {"platform", md.platform()},
                      {"inputs", tensors(md.inputs())},
                      {"outputs", tensors(md.outputs())}});
  });
  s.Get(model + "/ready", [impl](const http::Request& req) {
    const bool ready = impl->Resolve(req.captures[0], req.captures[1]).ok();
    return Json(ready ? 200 : 400, {{"name", req.captures[0]}, {"ready", ready}});
  });
  s.Post(model + "/infer", [impl](const http::Request& req) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<oip::ModelInferResponse> resp = [&]() -> absl::StatusOr<oip::ModelInferResponse> {
      // The model first: a request for one this site does not serve is 404 whatever its body.
      RETURN_IF_ERROR(impl->Resolve(req.captures[0], req.captures[1]).status());
      ASSIGN_OR_RETURN(oip::ModelInferRequest r, ParseInferJson(req.body, req.captures[0], req.captures[1]));
      return InferOn(*impl, r);
    }();
    impl->Count("rest", "oip", resp.status(), Since(start));
    if (!resp.ok()) return JsonError(resp.status());
    return Json(200, InferResponseJson(*resp));
  });
  s.Post("/v1/predict", [impl](const http::Request& req) {
    const auto start = std::chrono::steady_clock::now();
    auto type = req.headers.find("content-type");
    if (type == req.headers.end() || !absl::StartsWithIgnoreCase(type->second, "application/dicom")) {
      const absl::Status st = absl::InvalidArgumentError(
          "send the DICOM file as the body with Content-Type: application/dicom");
      impl->Count("rest", "dicom", st, Since(start));
      http::Response r = JsonError(st);
      r.status = 415;
      return r;
    }
    int version = -1;
    if (auto v = req.query.find("model_version"); v != req.query.end() && !absl::SimpleAtoi(v->second, &version)) {
      const absl::Status st = absl::InvalidArgumentError("model_version must be a number");
      impl->Count("rest", "dicom", st, Since(start));
      return JsonError(st);
    }
    auto resp = PredictOn(*impl, req.body, version);
    impl->Count("rest", "dicom", resp.status(), Since(start));
    if (!resp.ok()) return JsonError(resp.status());
    return Json(200, PredictJson(*resp));
  });
}

}  // namespace

InferenceService::InferenceService(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
InferenceService::~InferenceService() { Stop(); }

absl::StatusOr<std::unique_ptr<InferenceService>> InferenceService::Start(const InferenceServiceOptions& options,
                                                                          MetricsRegistry* metrics) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->metrics = metrics;
  Impl* raw = impl.get();
  BatcherOptions bo;
  bo.max_batch_size = options.max_batch_size;
  bo.max_queue_delay = options.max_queue_delay;
  if (metrics != nullptr) {
    Histogram& sizes = metrics->GetHistogram("fedtune_site_inference_batch_size", "Images per model run",
                                             ExponentialBuckets(1, 2, 11));
    Counter& images = metrics->GetCounter("fedtune_site_inference_images_total", "Images run through the served model");
    Histogram& seconds = metrics->GetHistogram("fedtune_site_inference_batch_seconds", "Seconds per model run",
                                               LatencyBuckets());
    bo.on_batch = [&sizes, &images, &seconds](int n, double s) {
      sizes.Observe(n);
      images.Add(n);
      seconds.Observe(s);
    };
  }
  impl->batcher = std::make_unique<Batcher>(bo);
  if (options.http_listen.empty() && options.grpc_listen.empty()) {
    return absl::InvalidArgumentError("[inference]: set http_listen, grpc_listen or both");
  }
  if (!options.http_listen.empty()) {
    http::ServerOptions ho;
    ho.name = "inference REST";
    ho.listen = options.http_listen;
    ho.tls = options.tls;
    ho.tls_files = options.tls_files;
    ho.threads = options.http_threads;
    ho.max_body_bytes = static_cast<size_t>(options.max_request_bytes);
    ASSIGN_OR_RETURN(impl->http, http::Server::Create(ho));
    AddRestRoutes(raw, *impl->http);
    RETURN_IF_ERROR(impl->http->Start());
  }
  if (!options.grpc_listen.empty()) {
    std::string host;
    int port = 0;
    RETURN_IF_ERROR(http::SplitHostPort(options.grpc_listen, &host, &port));
    std::shared_ptr<grpc::ServerCredentials> creds;
    if (options.tls) {
      ASSIGN_OR_RETURN(creds, net::MakeServerCredentials(options.tls_files));
    } else if (!http::IsLoopbackHost(host)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "inference gRPC: ", options.grpc_listen, " is not a loopback address; plain gRPC is served on loopback "
          "only (set [inference] tls = true)"));
    } else {
      creds = grpc::InsecureServerCredentials();
    }
    impl->services.push_back(std::make_unique<OipService>(raw));
    impl->services.push_back(std::make_unique<DicomService>(raw));
    grpc::ServerBuilder builder;
    builder.AddListeningPort(options.grpc_listen, creds, &impl->grpc_port);
    for (auto& s : impl->services) builder.RegisterService(s.get());
    builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<int64_t>(options.max_request_bytes, INT32_MAX)));
    builder.SetMaxSendMessageSize(64 << 20);
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    // Bounded: past these, calls are refused (RESOURCE_EXHAUSTED), not given a
    // thread (and a request's memory) each.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 32);
    grpc::ResourceQuota quota("fedtune-site-inference");
    quota.SetMaxThreads(std::max(4, options.max_concurrent_requests));
    builder.SetResourceQuota(quota);
    impl->grpc_server = builder.BuildAndStart();
    if (impl->grpc_server == nullptr || impl->grpc_port == 0) {
      return absl::UnavailableError(absl::StrCat("inference gRPC: cannot listen on ", options.grpc_listen,
                                                 " (in use, or not an address of this host)"));
    }
  }
  return std::unique_ptr<InferenceService>(new InferenceService(std::move(impl)));
}

void InferenceService::SetModel(std::shared_ptr<const ServingModel> model) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->model = std::move(model);
}

std::shared_ptr<const ServingModel> InferenceService::model() const { return impl_->Current(); }

int InferenceService::http_port() const { return impl_->http != nullptr ? impl_->http->port() : 0; }
int InferenceService::grpc_port() const { return impl_->grpc_port; }

void InferenceService::Stop() {
  if (impl_->http != nullptr) impl_->http->Stop();
  if (impl_->grpc_server != nullptr) {
    impl_->grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    impl_->grpc_server.reset();
  }
  impl_->batcher->Stop();
}

absl::StatusOr<::inference::ModelInferResponse> InferenceService::Infer(const ::inference::ModelInferRequest& r) {
  return InferOn(*impl_, r);
}

absl::StatusOr<v1::PredictResponse> InferenceService::Predict(std::string_view dicom, int model_version) {
  return PredictOn(*impl_, dicom, model_version);
}

}  // namespace fedtune::site
