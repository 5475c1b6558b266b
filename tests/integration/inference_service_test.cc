// `fedtune-site serve` as a hospital's clients see it: a real process on
// loopback, answered with curl (REST), a python3-grpcio client generated
// from the Open Inference Protocol v2 proto and fedtune's Inference proto,
// DICOM files written by DCMTK (fedtune-site synth) and by pydicom, and the
// same over mutual TLS with client certificates. Every answer is checked
// against the classifier the promoted model was made from.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/core/file_io.h"
#include "site-agent/inference/serving_model.h"
#include "site-agent/ingest/model_input.h"
#include "tests/testing/loopback_coordinator.h"
#include "tests/testing/process.h"
#include "tests/testing/python_reference.h"
#include "tests/testing/run_command.h"
#include "tests/testing/served_site.h"

namespace fedtune {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::Curl;
using testing::HaveCurl;

std::string ReadPort(const std::string& path) {
  for (int i = 0; i < 300; ++i) {
    auto bytes = ReadFileBytes(path);
    if (bytes.ok() && !bytes->empty() && bytes->back() == '\n') return bytes->substr(0, bytes->size() - 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return "";
}

class ServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    site_ = new testing::ServedSiteFiles();
    testing::MakeServedSite(::testing::TempDir() + "/serve_" + std::to_string(getpid()), site_);
  }
  static void TearDownTestSuite() {
    fs::remove_all(site_->root);
    delete site_;
  }
  void SetUp() override {
    if (!HaveCurl()) GTEST_SKIP() << "curl not installed (deploy/install-deps.sh installs it)";
  }
  void TearDown() override { server_.Stop(); }

  // Starts `fedtune-site serve` with [inference] `extra` lines and waits
  // until it is ready (probed with curl `probe` options and `scheme`); a
  // failure carries its log.
  ::testing::AssertionResult Serve(const std::string& name, const std::string& extra, const std::string& probe = "",
                                   const std::string& scheme = "http") {
    dir_ = site_->root + "/" + name;
    fs::create_directories(dir_);
    std::ofstream(dir_ + "/site.toml") << "[site]\nid = \"hospital-a\"\nworkspace = \"" << site_->workspace
                                       << "\"\n[ingest]\nimage_size = 32\nmin_rows = 64\nmin_columns = 64\n"
                                       << "[training]\nbackbone = \"" << site_->backbone << "\"\ndevice = \"cpu\"\n"
                                       << "threads = 1\n[log]\nlevel = \"info\"\n"
                                       << "[inference]\nhttp_listen = \"127.0.0.1:0\"\ngrpc_listen = \"127.0.0.1:0\"\n"
                                       << "model_name = \"chest\"\n" << extra;
    server_ = testing::ChildProcess({FEDTUNE_SITE_BIN, "serve", "--config", dir_ + "/site.toml", "--http-port-file",
                                     dir_ + "/http.port", "--grpc-port-file", dir_ + "/grpc.port"},
                                    dir_ + "/serve.log");
    http_port_ = ReadPort(dir_ + "/http.port");
    grpc_port_ = ReadPort(dir_ + "/grpc.port");
    if (http_port_.empty() || grpc_port_.empty()) {
      return ::testing::AssertionFailure() << "serve did not start: " << ReadFileBytes(dir_ + "/serve.log").value_or("");
    }
    // Ready once the held model is loaded.
    std::string body;
    for (int i = 0; i < 200; ++i) {
      if (Curl(probe + scheme + "://127.0.0.1:" + http_port_ + "/v2/health/ready", &body) == 200) {
        return ::testing::AssertionSuccess();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return ::testing::AssertionFailure() << "never ready: " << ReadFileBytes(dir_ + "/serve.log").value_or("");
  }
  std::string Http(const std::string& path) const { return "http://127.0.0.1:" + http_port_ + path; }
  std::string Log() const { return ReadFileBytes(dir_ + "/serve.log").value_or(""); }

  static testing::ServedSiteFiles* site_;
  std::string dir_, http_port_, grpc_port_;
  testing::ChildProcess server_;
};
testing::ServedSiteFiles* ServeTest::site_ = nullptr;

TEST_F(ServeTest, RestAnswersWithThePromotedModelAndRefusesBadInputWithAReason) {
  ASSERT_TRUE(Serve("rest", ""));
  std::string body;
  EXPECT_EQ(Curl(Http("/v2/health/live"), &body), 200);
  EXPECT_EQ(Curl(Http("/v2/models/chest/ready"), &body), 200);
  EXPECT_EQ(Curl(Http("/v2/models/chest/versions/3/ready"), &body), 200);
  EXPECT_EQ(Curl(Http("/v2/models/chest/versions/2/ready"), &body), 400);
  EXPECT_EQ(Curl(Http("/v2/models/other/ready"), &body), 400);
  ASSERT_EQ(Curl(Http("/v2/models/chest"), &body), 200) << body;
  json meta = json::parse(body);
  EXPECT_EQ(meta["versions"], json::array({"3"}));
  EXPECT_EQ(meta["inputs"][0]["name"], "image");
  EXPECT_EQ(meta["inputs"][0]["shape"], json::array({-1, 1, 32, 32}));
  EXPECT_EQ(meta["outputs"][0]["shape"], json::array({-1, 4}));
  ASSERT_EQ(Curl(Http("/v2"), &body), 200);
  EXPECT_EQ(json::parse(body)["name"], "fedtune-site");

  // OIP v2 infer, data nested as [N][1][S][S]; two images.
  std::vector<float> images = site_->CachedImage();
  for (float v : site_->CachedImage()) images.push_back(1.0f - v);
  json data = json::array();
  for (int n = 0; n < 2; ++n) {
    json rows = json::array();
    for (int y = 0; y < 32; ++y) rows.push_back(std::vector<float>(images.begin() + n * 1024 + y * 32,
                                                                   images.begin() + n * 1024 + y * 32 + 32));
    data.push_back(json::array({rows}));
  }
  const json request{{"id", "r1"},
                     {"inputs", json::array({{{"name", "image"}, {"shape", {2, 1, 32, 32}}, {"datatype", "FP32"},
                                              {"data", data}}})}};
  std::ofstream(dir_ + "/infer.json") << request.dump();
  ASSERT_EQ(Curl("-H 'Content-Type: application/json' --data-binary @" + dir_ + "/infer.json " +
                     Http("/v2/models/chest/infer"),
                 &body),
            200)
      << body;
  json answer = json::parse(body);
  EXPECT_EQ(answer["model_version"], "3");
  EXPECT_EQ(answer["id"], "r1");
  EXPECT_EQ(answer["outputs"][0]["name"], "probabilities");
  EXPECT_EQ(answer["outputs"][0]["shape"], json::array({2, 4}));
  const std::vector<double> want = site_->Reference(images, 2, 32);
  const auto probs = answer["outputs"][0]["data"].get<std::vector<double>>();
  ASSERT_EQ(probs.size(), 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(probs[i], want[i], 1e-5) << i;
  const auto positive = answer["outputs"][1]["data"].get<std::vector<bool>>();
  EXPECT_EQ(positive[0], probs[0] >= 0.25);
  EXPECT_EQ(positive[1], probs[1] >= 0.5);

  // DICOM in (the DCMTK-written file this workspace ingested): the model's answer on its cached image.
  ASSERT_EQ(Curl("-H 'Content-Type: application/dicom' --data-binary @" + site_->dicom_path + " " +
                     Http("/v1/predict"),
                 &body),
            200)
      << body;
  json predicted = json::parse(body);
  EXPECT_EQ(predicted["job_id"], "job-inf");
  EXPECT_EQ(predicted["model_version"], 3);
  ASSERT_EQ(predicted["findings"].size(), 4u);
  const std::vector<double> cached = site_->Reference(site_->CachedImage(), 1, 32);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(predicted["findings"][i]["finding"], ingest::SynthFindings()[i]);
    EXPECT_NEAR(predicted["findings"][i]["probability"].get<double>(), cached[i], 1e-5);
  }
  EXPECT_DOUBLE_EQ(predicted["findings"][0]["threshold"].get<double>(), 0.25);

  // Refusals: each a 4xx with the reason as the protocol's error object.
  std::ofstream(dir_ + "/note.txt") << "Patient: DOE^JANE, MRN 12345";
  EXPECT_EQ(Curl("-H 'Content-Type: application/dicom' --data-binary @" + dir_ + "/note.txt " + Http("/v1/predict"),
                 &body),
            400);
  EXPECT_TRUE(absl::StartsWith(json::parse(body)["error"].get<std::string>(), "unreadable:")) << body;
  EXPECT_EQ(Curl("-H 'Content-Type: text/plain' --data-binary @" + site_->dicom_path + " " + Http("/v1/predict"),
                 &body),
            415);
  EXPECT_EQ(Curl("-H 'Content-Type: application/json' -d '{\"inputs\": 3}' " + Http("/v2/models/chest/infer"), &body),
            400);
  EXPECT_TRUE(json::parse(body).contains("error"));
  EXPECT_EQ(Curl("-H 'Content-Type: application/json' -d 'not json' " + Http("/v2/models/chest/infer"), &body), 400);
  const json wrong_shape{{"inputs", json::array({{{"name", "image"}, {"shape", {1, 3, 32, 32}}, {"datatype", "FP32"},
                                                  {"data", std::vector<float>(3072, 0.5f)}}})}};
  EXPECT_EQ(Curl("-H 'Content-Type: application/json' -d '" + wrong_shape.dump() + "' " +
                     Http("/v2/models/chest/infer"),
                 &body),
            400);
  EXPECT_TRUE(absl::StrContains(body, "expected [N, 1, S, S]")) << body;
  EXPECT_EQ(Curl("-H 'Content-Type: application/json' -d '{}' " + Http("/v2/models/other/infer"), &body), 404);
  // Hostile shapes: data nested far deeper than any tensor, more images than a request may hold.
  std::ofstream(dir_ + "/deep.json") << "{\"inputs\": [{\"name\": \"image\", \"shape\": [1, 1, 32, 32], "
                                     << "\"datatype\": \"FP32\", \"data\": " << std::string(100000, '[')
                                     << std::string(100000, ']') << "}]}";
  EXPECT_EQ(Curl("-H 'Content-Type: application/json' --data-binary @" + dir_ + "/deep.json " +
                     Http("/v2/models/chest/infer"),
                 &body),
            400);
  EXPECT_TRUE(absl::StrContains(body, "nests deeper")) << body.substr(0, 200);
  const json many{{"inputs", json::array({{{"name", "image"}, {"shape", {65, 1, 16, 16}}, {"datatype", "FP32"},
                                           {"data", std::vector<float>(65 * 256, 0.5f)}}})}};
  std::ofstream(dir_ + "/many.json") << many.dump();
  EXPECT_EQ(Curl("-H 'Content-Type: application/json' --data-binary @" + dir_ + "/many.json " +
                     Http("/v2/models/chest/infer"),
                 &body),
            400);
  EXPECT_TRUE(absl::StrContains(body, "at most 64 per request")) << body;

  // What the service counted, and nothing of the request in its log.
  ASSERT_EQ(Curl(Http("/metrics"), &body), 200);
  EXPECT_TRUE(absl::StrContains(
      body, "fedtune_site_inference_requests_total{api=\"dicom\",outcome=\"ok\",protocol=\"rest\"} 1"))
      << body;
  EXPECT_TRUE(absl::StrContains(
      body, "fedtune_site_inference_requests_total{api=\"dicom\",outcome=\"invalid\",protocol=\"rest\"} 2"))
      << body;
  EXPECT_TRUE(absl::StrContains(body, "fedtune_site_inference_images_total 3")) << body;
  EXPECT_FALSE(absl::StrContains(Log(), "DOE")) << Log();
  EXPECT_TRUE(absl::StrContains(Log(), "answering with job job-inf version 3")) << Log();

  // SIGTERM: a clean, prompt stop.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(server_.Stop(std::chrono::seconds(5)), 0) << Log();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_TRUE(absl::StrContains(Log(), "stopping")) << Log();
}

// python3-grpcio clients generated at test time from the protos as shipped.
TEST_F(ServeTest, GrpcClientsGeneratedFromTheProtosAgreeWithTheModel) {
  if (!testing::PythonHas("grpc grpc_tools numpy pydicom")) {
    GTEST_SKIP() << "python3-grpcio, python3-grpc-tools, python3-numpy or python3-pydicom not installed "
                    "(deploy/install-deps.sh installs them)";
  }
  ASSERT_TRUE(Serve("grpc", "max_batch_size = 4\nmax_queue_delay_ms = 20\n"));
  const std::string gen = dir_ + "/gen";
  fs::create_directories(gen);
  std::string out;
  ASSERT_EQ(testing::RunCommand(testing::Python3() + " -m grpc_tools.protoc -I " + testing::SourceDir() +
                                    "/protos --python_out=" + gen + " --grpc_python_out=" + gen +
                                    " inference/v2/grpc_predict_v2.proto fedtune/v1/inference.proto",
                                &out),
            0)
      << out;
  const std::vector<float> image = site_->CachedImage();
  ASSERT_TRUE(WriteFileAtomically(dir_ + "/image.f32",
                                  std::string(reinterpret_cast<const char*>(image.data()), image.size() * 4))
                  .ok());
  // A CR radiograph written by pydicom (not by DCMTK): 200 x 160, 12 bits, MONOCHROME1.
  const std::string client = R"PY(
import json, sys, concurrent.futures
import numpy as np, grpc, pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
sys.path.insert(0, sys.argv[1])
from inference.v2 import grpc_predict_v2_pb2 as oip, grpc_predict_v2_pb2_grpc as oip_grpc
from fedtune.v1 import inference_pb2 as fi, inference_pb2_grpc as fi_grpc
port, folder = sys.argv[2], sys.argv[3]
channel = grpc.insecure_channel('127.0.0.1:' + port)
stub = oip_grpc.GRPCInferenceServiceStub(channel)
out = {}
out['live'] = stub.ServerLive(oip.ServerLiveRequest()).live
out['ready'] = stub.ServerReady(oip.ServerReadyRequest()).ready
out['model_ready'] = stub.ModelReady(oip.ModelReadyRequest(name='chest')).ready
out['other_ready'] = stub.ModelReady(oip.ModelReadyRequest(name='other')).ready
meta = stub.ModelMetadata(oip.ModelMetadataRequest(name='chest'))
out['input_shape'] = list(meta.inputs[0].shape)
out['server'] = stub.ServerMetadata(oip.ServerMetadataRequest()).name
image = np.fromfile(folder + '/image.f32', dtype='<f4').reshape(1, 1, 32, 32)
def infer(batch):
    req = oip.ModelInferRequest(model_name='chest', id='g')
    t = req.inputs.add(); t.name = 'image'; t.datatype = 'FP32'; t.shape.extend(batch.shape)
    req.raw_input_contents.append(batch.astype('<f4').tobytes())
    return stub.ModelInfer(req)
r = infer(image)
out['raw_probabilities'] = np.frombuffer(r.raw_output_contents[0], dtype='<f4').tolist()
out['raw_positive'] = list(r.raw_output_contents[1])
# Typed contents instead of raw bytes.
req = oip.ModelInferRequest(model_name='chest')
t = req.inputs.add(); t.name = 'image'; t.datatype = 'FP32'; t.shape.extend([1, 1, 32, 32])
t.contents.fp32_contents.extend(image.ravel().tolist())
out['typed_probabilities'] = list(stub.ModelInfer(req).outputs[0].contents.fp32_contents)
# Twelve concurrent clients: batched, each answered with its own image.
batches = [np.clip(image * (0.5 + i / 24.0), 0, 1) for i in range(12)]
with concurrent.futures.ThreadPoolExecutor(12) as pool:
    results = list(pool.map(lambda b: np.frombuffer(infer(b).raw_output_contents[0], dtype='<f4').tolist(), batches))
out['concurrent'] = results
np.stack(batches).astype('<f4').tofile(folder + '/batches.f32')
try:
    t.datatype = 'INT8'
    stub.ModelInfer(req)
    out['bad_code'] = 'OK'
except grpc.RpcError as e:
    out['bad_code'] = e.code().name
    out['bad_detail'] = e.details()
# DICOM in, over fedtune.v1.Inference.
meta_ds = FileMetaDataset()
meta_ds.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.1'
meta_ds.MediaStorageSOPInstanceUID = generate_uid()
meta_ds.TransferSyntaxUID = ExplicitVRLittleEndian
ds = Dataset(); ds.file_meta = meta_ds
ds.SOPClassUID = meta_ds.MediaStorageSOPClassUID; ds.SOPInstanceUID = meta_ds.MediaStorageSOPInstanceUID
ds.Modality = 'CR'; ds.PatientName = 'DOE^JANE'; ds.PatientID = 'MRN-12345'
ds.Rows, ds.Columns = 200, 160
ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = 'MONOCHROME1'
ds.BitsAllocated = 16; ds.BitsStored = 12; ds.HighBit = 11; ds.PixelRepresentation = 0
yy, xx = np.mgrid[0:200, 0:160]
ds.PixelData = ((xx * 13 + yy * 7) % 4096).astype('<u2').tobytes()
ds.is_little_endian = True; ds.is_implicit_VR = False
ds.save_as(folder + '/pydicom.dcm', write_like_original=False)
dicom = fi_grpc.InferenceStub(channel)
p = dicom.Predict(fi.PredictRequest(dicom=open(folder + '/pydicom.dcm', 'rb').read(), model_version=-1))
out['dicom'] = {'job': p.job_id, 'version': p.model_version,
                'probabilities': [f.probability for f in p.findings], 'findings': [f.finding for f in p.findings]}
try:
    dicom.Predict(fi.PredictRequest(dicom=b'not dicom', model_version=-1))
except grpc.RpcError as e:
    out['dicom_bad'] = e.code().name + ': ' + e.details()
print(json.dumps(out))
)PY";
  std::ofstream(dir_ + "/client.py") << client;
  ASSERT_EQ(testing::RunCommand(testing::Python3() + " " + dir_ + "/client.py " + gen + " " + grpc_port_ + " " + dir_,
                                &out),
            0)
      << out << Log();
  json r = json::parse(out.substr(out.find('{')));
  EXPECT_TRUE(r["live"].get<bool>());
  EXPECT_TRUE(r["ready"].get<bool>());
  EXPECT_TRUE(r["model_ready"].get<bool>());
  EXPECT_FALSE(r["other_ready"].get<bool>());
  EXPECT_EQ(r["input_shape"], json::array({-1, 1, 32, 32}));
  EXPECT_EQ(r["server"], "fedtune-site");
  const std::vector<double> want = site_->Reference(image, 1, 32);
  for (const char* key : {"raw_probabilities", "typed_probabilities"}) {
    const auto got = r[key].get<std::vector<double>>();
    ASSERT_EQ(got.size(), 4u) << key;
    for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << key << " " << i;
  }
  EXPECT_EQ(r["raw_positive"][0].get<int>(), want[0] >= 0.25 ? 1 : 0);
  EXPECT_EQ(r["bad_code"], "INVALID_ARGUMENT");
  EXPECT_EQ(r["bad_detail"], "input 'image' has datatype INT8; expected FP32");
  // Concurrent requests were batched, yet each got the answer for its own image.
  const std::string batches = *ReadFileBytes(dir_ + "/batches.f32");
  std::vector<float> all(batches.size() / 4);
  std::memcpy(all.data(), batches.data(), batches.size());
  const std::vector<double> each = site_->Reference(all, 12, 32);
  for (int b = 0; b < 12; ++b) {
    for (int f = 0; f < 4; ++f) EXPECT_NEAR(r["concurrent"][b][f].get<double>(), each[b * 4 + f], 1e-5) << b;
  }
  // The pydicom file through the same pixel path as ingest.
  ingest::ModelInputOptions mi{site_->ingest.filters, 32, site_->ingest.fit, 8};
  auto decoded = ingest::DecodeForModel(*ReadFileBytes(dir_ + "/pydicom.dcm"), mi);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  const std::vector<double> pyd = site_->Reference(decoded->pixels, 1, 32);
  EXPECT_EQ(r["dicom"]["job"], "job-inf");
  EXPECT_EQ(r["dicom"]["version"], 3);
  EXPECT_EQ(r["dicom"]["findings"].get<std::vector<std::string>>(), ingest::SynthFindings());
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(r["dicom"]["probabilities"][i].get<double>(), pyd[i], 1e-5);
  EXPECT_TRUE(absl::StartsWith(r["dicom_bad"].get<std::string>(), "INVALID_ARGUMENT: unreadable")) << r["dicom_bad"];
  EXPECT_FALSE(absl::StrContains(Log(), "DOE")) << Log();
  EXPECT_FALSE(absl::StrContains(Log(), "MRN")) << Log();
  // Batching happened: fewer model runs than the 15 images of the gRPC calls.
  std::string body;
  ASSERT_EQ(Curl(Http("/metrics"), &body), 200);
  EXPECT_TRUE(absl::StrContains(body, "fedtune_site_inference_batch_size_count")) << body;
}

TEST_F(ServeTest, MutualTlsAdmitsOnlyTheHospitalsClientCertificates) {
  if (!testing::HaveOpenssl()) GTEST_SKIP() << "openssl not installed";
  const std::string pki = site_->root + "/pki";
  fs::create_directories(pki);
  std::string out;
  ASSERT_EQ(testing::MakeFederationPki(pki, {"alice"}, {"hospital-a"}, &out), 0) << out;
  // The federation's CA stands in for the hospital's; the coordinator's
  // certificate (it names 127.0.0.1) for this host's server certificate.
  const auto server = testing::PkiFiles(pki, "coordinator/coordinator");
  const auto client = testing::PkiFiles(pki, "site/hospital-a");
  const std::string with_cert =
      absl::StrCat("--cacert ", client.ca_pem, " --cert ", client.cert_pem, " --key ", client.key_pem, " ");
  ASSERT_TRUE(Serve("tls",
                    absl::StrCat("tls = true\ncert = \"", server.cert_pem, "\"\nkey = \"", server.key_pem,
                                 "\"\nclient_ca = \"", server.ca_pem, "\"\n"),
                    with_cert, "https"));
  const std::string url = "https://127.0.0.1:" + http_port_;
  std::string body;
  EXPECT_EQ(Curl(with_cert + url + "/v2/health/ready", &body), 200) << body << Log();
  EXPECT_EQ(Curl(with_cert + "-H 'Content-Type: application/dicom' --data-binary @" + site_->dicom_path + " " + url +
                     "/v1/predict",
                 &body),
            200)
      << body;
  EXPECT_EQ(json::parse(body)["model_version"], 3);
  EXPECT_LT(Curl("--cacert " + client.ca_pem + " " + url + "/v2/health/ready", &body), 0);  // no client certificate
  EXPECT_LT(Curl("-k http://127.0.0.1:" + http_port_ + "/v2/health/live", &body), 200);       // no plain HTTP
}

TEST(ServeConfig, PlainServingOffLoopbackIsRefusedNamingTheSetting) {
  const std::string dir = ::testing::TempDir() + "/serve_cfg_" + std::to_string(getpid());
  fs::create_directories(dir);
  std::ofstream(dir + "/site.toml") << "[site]\nid = \"h\"\nworkspace = \"ws\"\n[inference]\n"
                                    << "http_listen = \"0.0.0.0:8000\"\n";
  std::string out;
  EXPECT_EQ(testing::RunCommand(std::string(FEDTUNE_SITE_BIN) + " serve --config " + dir + "/site.toml", &out), 2);
  EXPECT_TRUE(absl::StrContains(out, "key 'inference.http_listen' = \"0.0.0.0:8000\" is not a loopback address"))
      << out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fedtune
