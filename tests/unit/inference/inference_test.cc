// The site inference service in process: the batcher with a fake model, the
// in-memory DICOM path against the cache ingest writes, the served model
// against the classifier it wraps, and the Open Inference Protocol
// operations with their refusals. Real clients over the network are in
// tests/integration/inference_service_test.cc.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/safetensors.h"
#include "common/fl/task_spec.h"
#include "common/model/classifier.h"
#include "site-agent/inference/batcher.h"
#include "site-agent/inference/inference_service.h"
#include "site-agent/inference/served_model.h"
#include "site-agent/inference/serving_model.h"
#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/model_input.h"
#include "site-agent/ingest/synth.h"
#include "tests/testing/served_site.h"

namespace fedtune::site {
namespace {

namespace fs = std::filesystem;

// Output i = the sum of image i's values; counts runs and their sizes.
class SumModel final : public BatchModel {
 public:
  int image_size() const override { return 4; }
  int num_outputs() const override { return 1; }
  absl::StatusOr<std::vector<float>> Run(std::span<const float> images, int n, int side) const override {
    std::lock_guard<std::mutex> lock(mu_);
    sizes_.push_back(n);
    std::vector<float> out(n, 0.0f);
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < side * side; ++j) out[i] += images[i * side * side + j];
    }
    return out;
  }
  std::vector<int> sizes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sizes_;
  }

 private:
  mutable std::mutex mu_;
  mutable std::vector<int> sizes_;
};

std::vector<float> Filled(int n, int side, float v) { return std::vector<float>(static_cast<size_t>(n) * side * side, v); }

TEST(Batcher, ConcurrentRequestsShareABatchAndEachGetsItsOwnAnswer) {
  auto model = std::make_shared<SumModel>();
  BatcherOptions o;
  o.max_batch_size = 8;
  o.max_queue_delay = std::chrono::milliseconds(300);
  std::atomic<int> batches{0};
  o.on_batch = [&](int, double) { ++batches; };
  Batcher batcher(o);
  std::vector<std::thread> clients;
  std::vector<float> answers(8, -1.0f);
  for (int c = 0; c < 8; ++c) {
    clients.emplace_back([&, c] {
      auto r = batcher.Run(model, Filled(1, 4, static_cast<float>(c) / 16), 1, 4);
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->size(), 1u);
      answers[c] = (*r)[0];
    });
  }
  for (auto& t : clients) t.join();
  for (int c = 0; c < 8; ++c) EXPECT_FLOAT_EQ(answers[c], static_cast<float>(c)) << "client " << c;
  // Eight single-image requests within the delay: far fewer runs than requests.
  EXPECT_LT(model->sizes().size(), 8u);
  EXPECT_EQ(batches.load(), static_cast<int>(model->sizes().size()));
  for (int n : model->sizes()) EXPECT_LE(n, 8);
}

TEST(Batcher, NeverMixesModelsOrSidesAndRunsALargeRequestAlone) {
  auto a = std::make_shared<SumModel>();
  auto b = std::make_shared<SumModel>();
  BatcherOptions o;
  o.max_batch_size = 4;
  o.max_queue_delay = std::chrono::milliseconds(100);
  Batcher batcher(o);
  std::vector<std::thread> clients;
  clients.emplace_back([&] { EXPECT_EQ((*batcher.Run(a, Filled(1, 4, 0.5f), 1, 4))[0], 8.0f); });
  clients.emplace_back([&] { EXPECT_EQ((*batcher.Run(b, Filled(1, 4, 0.25f), 1, 4))[0], 4.0f); });
  clients.emplace_back([&] { EXPECT_EQ((*batcher.Run(a, Filled(1, 2, 1.0f), 1, 2))[0], 4.0f); });
  for (auto& t : clients) t.join();
  auto big = batcher.Run(a, Filled(10, 4, 0.0625f), 10, 4);
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->size(), 10u);
  EXPECT_FLOAT_EQ((*big)[9], 1.0f);
  EXPECT_EQ(a->sizes().back(), 10);  // alone, whole
  int a_images = 0;
  for (int n : a->sizes()) a_images += n;
  EXPECT_EQ(a_images, 12);  // its 4x4 and 2x2 images never shared a run
  EXPECT_EQ(b->sizes(), std::vector<int>{1});
}

TEST(Batcher, RefusesWrongSizesAndAnswersUnavailableOnceStopped) {
  auto model = std::make_shared<SumModel>();
  Batcher batcher(BatcherOptions{});
  EXPECT_EQ(batcher.Run(model, std::vector<float>(15), 1, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(batcher.Run(model, {}, 0, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(batcher.Run(nullptr, Filled(1, 4, 0), 1, 4).status().code(), absl::StatusCode::kUnavailable);
  batcher.Stop();
  EXPECT_EQ(batcher.Run(model, Filled(1, 4, 0), 1, 4).status().code(), absl::StatusCode::kUnavailable);
}

class ServedSite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    site_ = new testing::ServedSiteFiles();
    testing::MakeServedSite(::testing::TempDir() + "/inference_" + std::to_string(getpid()), site_);
    dicom_ = new std::string(*ReadFileBytes(site_->dicom_path));
    input_ = new ingest::ModelInputOptions{site_->ingest.filters, site_->ingest.image_size, site_->ingest.fit,
                                           site_->ingest.cache_bits};
  }
  static void TearDownTestSuite() {
    fs::remove_all(site_->root);
    delete site_;
  }

  static absl::StatusOr<std::shared_ptr<const ServingModel>> Load() {
    auto held = LoadHeldModel(site_->workspace, "current");
    if (!held.ok()) return held.status();
    if (!*held) return absl::NotFoundError("no held model");
    ServingModelOptions o;
    o.backbone_path = site_->backbone;
    o.backbone_sha256 = site_->backbone_sha256;
    o.device = "cpu";
    o.threads = 1;
    return ServingModel::Load(**held, o);
  }
  static std::vector<float> CachedImage() { return site_->CachedImage(); }
  static std::vector<double> Reference(const std::vector<float>& images, int n, int side) {
    return site_->Reference(images, n, side);
  }

  static testing::ServedSiteFiles* site_;
  static std::string* dicom_;
  static ingest::ModelInputOptions* input_;
};
testing::ServedSiteFiles* ServedSite::site_ = nullptr;
std::string* ServedSite::dicom_ = nullptr;
ingest::ModelInputOptions* ServedSite::input_ = nullptr;

TEST_F(ServedSite, LiveDecodingGivesExactlyTheCachedImage) {
  auto live = ingest::DecodeForModel(*dicom_, *input_);
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(live->size, 32);
  EXPECT_EQ(live->pixels, CachedImage());
}

TEST_F(ServedSite, LiveDecodingRefusesWhatIsNotARadiographWithTheReason) {
  auto text = ingest::DecodeForModel("this is not a DICOM file", *input_);
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(text.status().message(), "unreadable")) << text.status();
  auto empty = ingest::DecodeForModel("", *input_);
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  for (size_t cut : {size_t{10}, size_t{200}, dicom_->size() / 2}) {
    auto truncated = ingest::DecodeForModel(std::string_view(*dicom_).substr(0, cut), *input_);
    EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument) << cut;
  }
  // The same image as MR.
  DcmFileFormat file;
  ASSERT_TRUE(file.loadFile((site_->dicom_path).c_str()).good());
  ASSERT_TRUE(file.getDataset()->putAndInsertString(DCM_Modality, "MR").good());
  ASSERT_TRUE(file.saveFile((site_->root + "/mr.dcm").c_str(), EXS_LittleEndianExplicit).good());
  auto mr = ingest::DecodeForModel(*ReadFileBytes(site_->root + "/mr.dcm"), *input_);
  EXPECT_EQ(mr.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mr.status().message(), "modality: modality MR is not one of CR, DX");
  ingest::ModelInputOptions small = *input_;
  small.filters.max_file_bytes = 1000;
  auto big = ingest::DecodeForModel(*dicom_, small);
  EXPECT_TRUE(absl::StartsWith(big.status().message(), "too_large")) << big.status();
}

TEST_F(ServedSite, TheServedModelAnswersAsTheClassifierItWasMadeFrom) {
  auto model = Load();
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->promotion().version(), 3);
  EXPECT_EQ((*model)->image_size(), 32);
  ASSERT_EQ((*model)->findings(), ingest::SynthFindings());
  EXPECT_EQ((*model)->thresholds()[0], 0.25);
  EXPECT_EQ((*model)->thresholds()[1], 0.5);  // none chosen
  std::vector<float> images = CachedImage();
  for (float v : CachedImage()) images.push_back(1.0f - v);
  auto got = (*model)->Run(images, 2, 32);
  ASSERT_TRUE(got.ok()) << got.status();
  const std::vector<double> want = Reference(images, 2, 32);
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR((*got)[i], want[i], 1e-6) << i;
  EXPECT_GT(std::abs((*got)[0] - (*got)[4]), 1e-4);  // the two images are told apart

  auto held = LoadHeldModel(site_->workspace, "current");
  ServingModelOptions other;
  other.backbone_path = site_->backbone;
  other.backbone_sha256 = std::string(64, '0');
  other.device = "cpu";
  EXPECT_EQ(ServingModel::Load(**held, other).status().code(), absl::StatusCode::kFailedPrecondition);
  HeldModel tampered = **held;
  tampered.served.mutable_promotion()->set_sha256(std::string(64, 'a'));
  other.backbone_sha256 = site_->backbone_sha256;
  EXPECT_EQ(ServingModel::Load(tampered, other).status().code(), absl::StatusCode::kDataLoss);
}

::inference::ModelInferRequest InferRequest(const std::vector<float>& images, int n, int side, bool raw) {
  ::inference::ModelInferRequest req;
  req.set_model_name("chest");
  req.set_id("req-1");
  auto* in = req.add_inputs();
  in->set_name("image");
  in->set_datatype("FP32");
  for (int64_t d : {int64_t{n}, int64_t{1}, int64_t{side}, int64_t{side}}) in->add_shape(d);
  if (raw) {
    req.add_raw_input_contents(std::string(reinterpret_cast<const char*>(images.data()), images.size() * 4));
  } else {
    in->mutable_contents()->mutable_fp32_contents()->Add(images.begin(), images.end());
  }
  return req;
}

TEST_F(ServedSite, InferAndPredictAnswerWithTheModelOrRefuseWithAReason) {
  InferenceServiceOptions o;
  o.http_listen = "127.0.0.1:0";
  o.grpc_listen = "127.0.0.1:0";
  o.model_name = "chest";
  o.dicom = *input_;
  MetricsRegistry metrics;
  auto service = InferenceService::Start(o, &metrics);
  ASSERT_TRUE(service.ok()) << service.status();
  EXPECT_GT((*service)->http_port(), 0);
  EXPECT_GT((*service)->grpc_port(), 0);
  const std::vector<float> image = CachedImage();
  EXPECT_EQ((*service)->Infer(InferRequest(image, 1, 32, false)).status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*service)->Predict(*dicom_, -1).status().code(), absl::StatusCode::kUnavailable);

  auto model = Load();
  ASSERT_TRUE(model.ok()) << model.status();
  (*service)->SetModel(*model);
  const std::vector<double> want = Reference(image, 1, 32);
  for (bool raw : {false, true}) {
    auto r = (*service)->Infer(InferRequest(image, 1, 32, raw));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->model_name(), "chest");
    EXPECT_EQ(r->model_version(), "3");
    EXPECT_EQ(r->id(), "req-1");
    ASSERT_EQ(r->outputs_size(), 2);
    EXPECT_EQ(r->outputs(0).name(), "probabilities");
    EXPECT_EQ(std::vector<int64_t>(r->outputs(0).shape().begin(), r->outputs(0).shape().end()),
              (std::vector<int64_t>{1, 4}));
    std::vector<float> probs(4), positive(4);
    if (raw) {
      ASSERT_EQ(r->raw_output_contents_size(), 2);
      std::memcpy(probs.data(), r->raw_output_contents(0).data(), 16);
      for (int i = 0; i < 4; ++i) positive[i] = r->raw_output_contents(1)[i];
    } else {
      probs.assign(r->outputs(0).contents().fp32_contents().begin(), r->outputs(0).contents().fp32_contents().end());
      for (int i = 0; i < 4; ++i) positive[i] = r->outputs(1).contents().bool_contents(i);
    }
    for (int i = 0; i < 4; ++i) {
      EXPECT_NEAR(probs[i], want[i], 1e-6) << i;
      EXPECT_EQ(positive[i] != 0, probs[i] >= (*model)->thresholds()[i]) << i;
    }
  }
  // DICOM in: the decoded image is the cached one, so the answer is the model's on it.
  auto p = (*service)->Predict(*dicom_, -1);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->job_id(), "job-inf");
  EXPECT_EQ(p->model_version(), 3);
  EXPECT_EQ(p->model_sha256(), (*model)->promotion().sha256());
  ASSERT_EQ(p->findings_size(), 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(p->findings(i).finding(), ingest::SynthFindings()[i]);
    EXPECT_NEAR(p->findings(i).probability(), want[i], 1e-6);
    EXPECT_FLOAT_EQ(p->findings(i).threshold(), static_cast<float>((*model)->thresholds()[i]));
  }
  EXPECT_EQ((*service)->Predict(*dicom_, 2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*service)->Predict("not dicom", -1).status().code(), absl::StatusCode::kInvalidArgument);

  auto refused = [&](::inference::ModelInferRequest req) { return (*service)->Infer(req).status(); };
  auto req = InferRequest(image, 1, 32, false);
  req.set_model_name("other");
  EXPECT_EQ(refused(req).code(), absl::StatusCode::kNotFound);
  req = InferRequest(image, 1, 32, false);
  req.set_model_version("2");
  EXPECT_EQ(refused(req).code(), absl::StatusCode::kNotFound);
  req = InferRequest(image, 1, 32, false);
  req.mutable_inputs(0)->set_datatype("UINT8");
  EXPECT_EQ(refused(req).message(), "input 'image' has datatype UINT8; expected FP32");
  req = InferRequest(image, 1, 32, false);
  req.mutable_inputs(0)->set_shape(1, 3);
  EXPECT_EQ(refused(req).code(), absl::StatusCode::kInvalidArgument);
  req = InferRequest(image, 1, 32, false);
  req.mutable_inputs(0)->mutable_contents()->set_fp32_contents(5, 2.0f);
  EXPECT_EQ(refused(req).message(), "input values must lie in [0, 1] (grey levels, 0 = black)");
  req = InferRequest(image, 1, 32, false);
  req.mutable_inputs(0)->mutable_contents()->mutable_fp32_contents()->RemoveLast();
  EXPECT_EQ(refused(req).code(), absl::StatusCode::kInvalidArgument);
  req = InferRequest(image, 1, 32, false);
  req.add_outputs()->set_name("logits");
  EXPECT_EQ(refused(req).code(), absl::StatusCode::kInvalidArgument);
  req = InferRequest(image, 1, 32, true);
  req.mutable_raw_input_contents(0)->pop_back();
  EXPECT_EQ(refused(req).code(), absl::StatusCode::kInvalidArgument);
  // Only what was asked for.
  req = InferRequest(image, 1, 32, false);
  req.add_outputs()->set_name("positive");
  auto only = (*service)->Infer(req);
  ASSERT_TRUE(only.ok()) << only.status();
  ASSERT_EQ(only->outputs_size(), 1);
  EXPECT_EQ(only->outputs(0).name(), "positive");
  const std::string exposition = metrics.Exposition();
  EXPECT_NE(exposition.find("fedtune_site_inference_images_total"), std::string::npos);
  (*service)->Stop();
}

}  // namespace
}  // namespace fedtune::site
