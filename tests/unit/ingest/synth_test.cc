#include "site-agent/ingest/synth.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <gtest/gtest.h>

#include <dcmtk/dcmdata/dcdeftag.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <map>
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

// Printed text changes the pixels under its glyphs and nothing else, is
// listed in burned_in.csv, and lies inside the image.
TEST(Synth, TextIsPrintedOnlyWhereItsBoxesSay) {
  const std::string dir = ::testing::TempDir() + "/synth_text";
  std::filesystem::remove_all(dir);
  SynthOptions o;
  o.site = "TXT";
  o.patients = 6;
  o.image_size = 256;
  auto without = WriteSyntheticSite(o, dir + "/without");
  ASSERT_TRUE(without.ok()) << without.status();
  EXPECT_TRUE(without->burned_in.empty());
  EXPECT_FALSE(std::filesystem::exists(dir + "/without/burned_in.csv"));
  o.burned_in_fraction = 0.5;
  o.markers = true;
  auto with = WriteSyntheticSite(o, dir + "/with");
  ASSERT_TRUE(with.ok()) << with.status();
  ASSERT_EQ(with->images, without->images) << "text does not change what is drawn";
  std::map<std::string, std::vector<PixelBox>> boxes;
  std::map<std::string, int> kinds;
  for (const BurnedInText& t : with->burned_in) {
    EXPECT_GE(t.box.x, 0);
    EXPECT_GE(t.box.y, 0);
    EXPECT_LE(t.box.x + t.box.width, o.image_size);
    EXPECT_LE(t.box.y + t.box.height, o.image_size);
    EXPECT_GT(t.box.width * t.box.height, 0);
    boxes[t.image_id].push_back(t.box);
    ++kinds[t.kind];
  }
  EXPECT_GE(kinds["marker"], with->images) << "every image carries a marker";
  EXPECT_GT(kinds["name"] + kinds["date"] + kinds["record_number"], 0);
  const std::string csv = *ReadFileBytes(dir + "/with/burned_in.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), static_cast<long>(with->burned_in.size()) + 1);
  for (size_t i = 0; i < with->files.size(); ++i) {
    DcmFileFormat a, b;
    ASSERT_TRUE(a.loadFile(with->files[i].c_str()).good());
    ASSERT_TRUE(b.loadFile(without->files[i].c_str()).good());
    const Uint16 *pa = nullptr, *pb = nullptr;
    ASSERT_TRUE(a.getDataset()->findAndGetUint16Array(DCM_PixelData, pa).good());
    ASSERT_TRUE(b.getDataset()->findAndGetUint16Array(DCM_PixelData, pb).good());
    const std::string id = std::filesystem::path(with->files[i]).stem().string();
    int changed = 0, outside = 0;
    for (int y = 0; y < o.image_size; ++y) {
      for (int x = 0; x < o.image_size; ++x) {
        const size_t k = static_cast<size_t>(y) * o.image_size + x;
        if (pa[k] == pb[k]) continue;
        ++changed;
        bool inside = false;
        for (const PixelBox& bx : boxes[id]) {
          inside = inside || (x >= bx.x && x < bx.x + bx.width && y >= bx.y && y < bx.y + bx.height);
        }
        outside += !inside;
      }
    }
    EXPECT_GT(changed, 0) << id;
    EXPECT_EQ(outside, 0) << id;
  }
  o.burned_in_fraction = 1.5;
  EXPECT_EQ(WriteSyntheticSite(o, dir + "/bad").status().code(), absl::StatusCode::kInvalidArgument);
  o.burned_in_fraction = 1;
  o.font_dir = dir + "/no_fonts";
  auto no_font = WriteSyntheticSite(o, dir + "/no_font");
  ASSERT_FALSE(no_font.ok());
  EXPECT_NE(no_font.status().message().find("fonts-dejavu-core"), std::string::npos);
}

// The 17 VinDr findings: each sign changes the same chest only by itself,
// the plain signs more than the subtle ones; a site's shift changes the
// picture without a finding; co-occurring findings come together.
TEST(Synth, VinDrFindingsHaveGradedSignsShiftsAndCoOccurrence) {
  const std::vector<std::string> all = VinDrSynthFindings();
  ASSERT_EQ(all.size(), 17u);
  const std::vector<std::string> first(all.begin(), all.begin() + 4);
  EXPECT_EQ(first, SynthFindings());
  const int n = 128;
  const std::vector<double> clean = RenderSyntheticChest(n, {}, 42);
  std::map<std::string, double> strength;  // mean absolute change over the image
  for (const auto& f : all) {
    EXPECT_TRUE(std::isfinite(VinDrLikePrevalence(f))) << f;
    const std::vector<double> with = RenderSyntheticChest(n, {f}, 42);
    ASSERT_EQ(with.size(), clean.size());
    double change = 0;
    for (size_t i = 0; i < with.size(); ++i) change += std::abs(with[i] - clean[i]);
    strength[f] = change / static_cast<double>(with.size());
    EXPECT_GT(strength[f], 2e-5) << f << " leaves no sign";
  }
  EXPECT_FALSE(std::isfinite(VinDrLikePrevalence("Tuberculosis")));
  // Graded: the plain signs are stronger than the subtle ones.
  for (const char* plain : {"Cardiomegaly", "Pleural effusion", "Nodule/Mass"}) {
    for (const char* subtle : {"Calcification", "Rib fracture", "ILD", "Other lesion"}) {
      EXPECT_GT(strength[plain], strength[subtle]) << plain << " vs " << subtle;
    }
  }
  // Two findings at once: each sign is drawn where it is drawn alone.
  const std::vector<double> both = RenderSyntheticChest(n, {"Consolidation", "Rib fracture"}, 42);
  const std::vector<double> cons = RenderSyntheticChest(n, {"Consolidation"}, 42);
  double outside = 0;
  const std::vector<double> rib = RenderSyntheticChest(n, {"Rib fracture"}, 42);
  for (size_t i = 0; i < both.size(); ++i) {
    if (rib[i] == clean[i]) outside = std::max(outside, std::abs(both[i] - cons[i]));
  }
  EXPECT_LT(outside, 1e-12);
  // A site's shift changes a chest without any finding.
  SiteShift shift;
  shift.gamma = 1.3;
  shift.blur = 2;
  shift.noise = 0.02;
  const std::vector<double> shifted = RenderSyntheticChest(n, {}, 42, shift);
  double moved = 0;
  for (size_t i = 0; i < shifted.size(); ++i) moved += std::abs(shifted[i] - clean[i]);
  EXPECT_GT(moved / static_cast<double>(n * n), 0.01);

  // Co-occurrence in the labels: with it, Pleural effusion is far more
  // common among images with Cardiomegaly than without.
  SynthOptions o;
  o.site = "VINDR";
  o.patients = 400;
  o.image_size = 64;
  o.findings = all;
  o.prevalence.clear();
  for (const auto& f : all) o.prevalence.push_back(VinDrLikePrevalence(f));
  o.prevalence[0] = 0.3;  // Cardiomegaly
  o.co_occurrence = true;
  o.shift = shift;
  const std::string dir = ::testing::TempDir() + "/synth_vindr_" + std::to_string(::getpid());
  std::filesystem::remove_all(dir);
  auto r = WriteSyntheticSite(o, dir);
  ASSERT_TRUE(r.ok()) << r.status();
  dataset::LabelOptions lo;
  lo.findings = all;
  auto table = dataset::ParseLabels(*ReadFileBytes(r->labels_csv), lo);
  ASSERT_TRUE(table.ok()) << table.status();
  double with_c = 0, eff_with_c = 0, without_c = 0, eff_without_c = 0;
  for (const auto& [k, v] : table->by_key) {
    (v[0] == 1 ? with_c : without_c) += 1;
    (v[0] == 1 ? eff_with_c : eff_without_c) += v[1] == 1 ? 1 : 0;
  }
  ASSERT_GT(with_c, 50);
  EXPECT_GT(eff_with_c / with_c, 2 * eff_without_c / without_c);
  std::filesystem::remove_all(dir);

  SynthOptions bad;
  bad.findings = {"Cardiomegaly", "Tuberculosis"};
  bad.prevalence = {0.1, 0.1};
  auto refused = WriteSyntheticSite(bad, dir);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(refused.status().message()).find("no sign for \"Tuberculosis\""), std::string::npos);
}

}  // namespace
}  // namespace fedtune::ingest
