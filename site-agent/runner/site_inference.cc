#include "site-agent/runner/site_inference.h"

#include <spdlog/spdlog.h>

#include <string>

#include "common/core/file_io.h"
#include "common/core/status.h"

namespace fedtune::site {

InferenceServiceOptions InferenceOptionsFor(const SiteConfig& config) {
  const InferenceConfig& c = config.inference;
  InferenceServiceOptions o;
  o.http_listen = c.http_listen;
  o.grpc_listen = c.grpc_listen;
  o.tls = c.tls;
  o.tls_files = c.tls_files;
  o.model_name = c.model_name;
  o.max_batch_size = c.max_batch_size;
  o.max_queue_delay = std::chrono::milliseconds(c.max_queue_delay_ms);
  o.max_request_bytes = c.max_request_bytes;
  o.dicom.filters = config.ingest.filters;
  o.dicom.image_size = config.ingest.image_size;
  o.dicom.fit = config.ingest.fit;
  o.dicom.cache_bits = config.ingest.cache_bits;
  return o;
}

absl::StatusOr<std::shared_ptr<const ServingModel>> ServeHeldModel(const SiteConfig& config,
                                                                   const std::string& backbone_sha256,
                                                                   InferenceService* service) {
  ASSIGN_OR_RETURN(std::optional<HeldModel> held, LoadHeldModel(config.ingest.workspace, "current"));
  if (!held) return service->model();
  std::shared_ptr<const ServingModel> now = service->model();
  if (now != nullptr && now->promotion().sha256() == held->served.promotion().sha256() &&
      now->promotion().seq() == held->served.promotion().seq()) {
    return now;
  }
  ServingModelOptions mo;
  mo.backbone_path = config.run.backbone;
  mo.backbone_sha256 = backbone_sha256;
  mo.device = config.inference.device;
  mo.threads = config.run.threads;
  ASSIGN_OR_RETURN(std::shared_ptr<const ServingModel> model, ServingModel::Load(*held, mo));
  service->SetModel(model);
  const v1::Promotion& p = model->promotion();
  spdlog::info("inference: answering with job {} version {} (SHA-256 {}) on {}", p.job_id(), p.version(),
               p.sha256().substr(0, 16), model->device());
  return model;
}

absl::Status WriteServicePorts(const InferenceService& service, const std::string& http_port_file,
                               const std::string& grpc_port_file) {
  if (!http_port_file.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(http_port_file, std::to_string(service.http_port()) + "\n"));
  }
  if (!grpc_port_file.empty()) {
    RETURN_IF_ERROR(WriteFileAtomically(grpc_port_file, std::to_string(service.grpc_port()) + "\n"));
  }
  return absl::OkStatus();
}

}  // namespace fedtune::site
