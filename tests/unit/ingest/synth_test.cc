#include "site-agent/ingest/synth.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "common/core/file_io.h"
#include "site-agent/dataset/labels.h"
#include "site-agent/ingest/deidentifier.h"
#include "site-agent/ingest/filters.h"
#include "site-agent/ingest/pixels.h"

namespace fedtune::ingest {
namespace {

struct Style {
  const char* name;
  ScannerStyle style;
};

std::vector<Style> Styles() {
  ScannerStyle plain;  // DX, MONOCHROME2, 12 bit, window, uncompressed
  ScannerStyle mono1;
  mono1.monochrome1 = true;
  mono1.bits_stored = 10;
  mono1.compression = "rle";
  ScannerStyle inverse;
  inverse.bits_stored = 16;
  inverse.rescale_slope = -1;
  inverse.rescale_intercept = 65535;
  inverse.compression = "jpegls";
  ScannerStyle cr;
  cr.modality = "CR";
  cr.bits_stored = 14;
  cr.rescale_slope = 2;
  cr.rescale_intercept = -1000;
  cr.window = false;
  return {{"plain", plain}, {"mono1_rle", mono1}, {"inverse_jpegls", inverse}, {"cr_nowindow", cr}};
}

// Every style writes valid, decodable, de-identifiable files that show the
// same picture; no planted identifier survives de-identification.
TEST(Synth, StylesDecodeToTheSamePictureAndLeakNothing) {
  const std::vector<uint8_t> key(32, 3);
  std::vector<GrayImage> first_images;
  for (const Style& s : Styles()) {
    SynthOptions o;
    o.site = "HOSPA";
    o.patients = 2;
    o.max_studies_per_patient = 1;
    o.image_size = 256;
    o.style = s.style;
    const std::string dir = ::testing::TempDir() + "/synth_" + s.name;
    std::filesystem::remove_all(dir);
    auto r = WriteSyntheticSite(o, dir);
    ASSERT_TRUE(r.ok()) << s.name << ": " << r.status();
    ASSERT_EQ(r->images, 2);
    DcmFileFormat file;
    ASSERT_TRUE(file.loadFile(r->files[0].c_str()).good()) << s.name;
    DcmDataset& ds = *file.getDataset();
    EXPECT_EQ(CheckHeader(ds, FilterOptions{}), std::nullopt) << s.name;
    ASSERT_TRUE(DeidentifyDataset(ds, key, DeidOptions{}).ok());
    ASSERT_TRUE(file.saveFile((dir + "/deid.dcm").c_str(), ds.getOriginalXfer()).good());
    auto bytes = ReadFileBytes(dir + "/deid.dcm");
    ASSERT_TRUE(bytes.ok());
    for (const std::string& phi : PlantedPhi("HOSPA")) {
      EXPECT_EQ(bytes->find(phi), std::string::npos) << s.name << " leaks " << phi;
    }
    auto img = DecodeGray(ds);
    ASSERT_TRUE(img.ok()) << s.name << ": " << img.status();
    first_images.push_back(*img);
  }
  for (size_t k = 1; k < first_images.size(); ++k) {
    double diff = 0;
    for (size_t i = 0; i < first_images[0].pixels.size(); ++i) {
      diff += std::abs(static_cast<double>(first_images[0].pixels[i]) - first_images[k].pixels[i]);
    }
    diff /= static_cast<double>(first_images[0].pixels.size()) * 65535.0;
    EXPECT_LT(diff, 0.02) << Styles()[k].name;  // same picture, up to quantization
  }
}

TEST(Synth, LabelsFollowPrevalenceInVinDrLayout) {
  SynthOptions o;
  o.site = "HOSPB";
  o.patients = 60;
  o.image_size = 64;
  o.prevalence = {0.5, 0.2, 0.0, 0.3};
  const std::string dir = ::testing::TempDir() + "/synth_labels";
  std::filesystem::remove_all(dir);
  auto r = WriteSyntheticSite(o, dir);
  ASSERT_TRUE(r.ok()) << r.status();
  dataset::LabelOptions lo;
  lo.findings = SynthFindings();
  auto table = dataset::ParseLabels(*ReadFileBytes(r->labels_csv), lo);
  ASSERT_TRUE(table.ok()) << table.status();
  ASSERT_EQ(table->by_key.size(), static_cast<size_t>(r->images));
  std::vector<double> positives(4, 0);
  for (const auto& [k, v] : table->by_key) {
    for (size_t f = 0; f < 4; ++f) positives[f] += v[f];
  }
  for (size_t f = 0; f < 4; ++f) positives[f] /= r->images;
  EXPECT_NEAR(positives[0], 0.5, 0.15);
  EXPECT_EQ(positives[2], 0.0);
  SynthOptions none;
  none.patients = 0;
  EXPECT_EQ(WriteSyntheticSite(none, dir).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fedtune::ingest
