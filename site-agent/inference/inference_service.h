// The site inference service: the federation's promoted model, served to
// the hospital's own clients (never to the coordinator), over
//   - the Open Inference Protocol v2 (KServe / Triton), gRPC
//     (inference.GRPCInferenceService) and REST (/v2/...): input "image",
//     FP32 [N, 1, S, S] in [0, 1] (S = the model's input side; another side
//     is resized as training resizes), outputs "probabilities" FP32
//     [N, findings] and "positive" BOOL [N, findings] (at the thresholds
//     chosen on the federation's validation data), each output carrying the
//     findings' names in order as parameter "findings" (a JSON list);
//   - DICOM in, findings out: POST /v1/predict (application/dicom) and
//     fedtune.v1.Inference/Predict, decoded in memory through ingest's pixel
//     path and never stored.
// Requests are batched (batcher.h). GET /metrics on the REST port serves
// the registry given to Start() (Prometheus). Plain connections on loopback only;
// otherwise mutual TLS with client certificates from the hospital's CA.
// Nothing of a request is logged: refusals carry reasons made of attribute
// names, codes and sizes.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/core/metrics.h"
#include "common/net/tls.h"
#include "fedtune/v1/inference.pb.h"
#include "inference/v2/grpc_predict_v2.pb.h"
#include "site-agent/ingest/model_input.h"
#include "site-agent/inference/serving_model.h"

namespace fedtune::site {

struct InferenceServiceOptions {
  std::string http_listen;  // host:port (0: a free port); empty: no REST
  std::string grpc_listen;  // host:port (0: a free port); empty: no gRPC
  bool tls = false;
  net::TlsFiles tls_files;  // server certificate and key, ca_pem = the clients' CA
  std::string model_name = "fedtune";
  int max_batch_size = 8;
  std::chrono::microseconds max_queue_delay{5000};
  int64_t max_request_bytes = int64_t{64} << 20;
  int64_t max_request_images = 64;   // N of an OIP request
  int max_concurrent_requests = 16;  // gRPC calls served at once (threads)
  int max_concurrent_decodes = 2;    // DICOM requests decoded at once
  ingest::ModelInputOptions dicom;  // the workspace's pixel path
  int http_threads = 8;
};

class InferenceService {
 public:
  // Binds and serves; UNAVAILABLE when an address cannot be bound,
  // INVALID_ARGUMENT for plain connections off loopback. `metrics` may be
  // null.
  static absl::StatusOr<std::unique_ptr<InferenceService>> Start(const InferenceServiceOptions& options,
                                                                 MetricsRegistry* metrics);
  ~InferenceService();  // Stop()

  // The model requests run on from now on (those in flight finish on the
  // one they started with); nullptr: none (not ready).
  void SetModel(std::shared_ptr<const ServingModel> model);
  std::shared_ptr<const ServingModel> model() const;

  int http_port() const;  // 0 when not served
  int grpc_port() const;
  void Stop();

  // The operations both protocols share (exposed for tests).
  absl::StatusOr<::inference::ModelInferResponse> Infer(const ::inference::ModelInferRequest& request);
  absl::StatusOr<v1::PredictResponse> Predict(std::string_view dicom, int model_version);

  struct Impl;

 private:
  explicit InferenceService(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedtune::site
