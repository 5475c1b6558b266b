// Burned-in text: the detector against text `synth` prints with real fonts,
// redaction in the stored pixels, and what ingest does with each mode.
#include "site-agent/ingest/burned_in.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>

#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/synth.h"

namespace fedtune::ingest {
namespace {

namespace fs = std::filesystem;

bool Overlap(const PixelBox& a, const PixelBox& b) {
  return std::min(a.x + a.width, b.x + b.width) > std::max(a.x, b.x) &&
         std::min(a.y + a.height, b.y + b.height) > std::max(a.y, b.y);
}

GrayImage Decode(const std::string& file) {
  DcmFileFormat f;
  EXPECT_TRUE(f.loadFile(file.c_str()).good()) << file;
  auto g = DecodeGray(*f.getDataset());
  EXPECT_TRUE(g.ok()) << g.status();
  return g.ok() ? *g : GrayImage{};
}

std::map<std::string, std::vector<BurnedInText>> ByImage(const std::vector<BurnedInText>& lines) {
  std::map<std::string, std::vector<BurnedInText>> out;
  for (const BurnedInText& t : lines) out[t.image_id].push_back(t);
  return out;
}

bool HasPhi(const std::vector<BurnedInText>& lines) {
  return std::any_of(lines.begin(), lines.end(), [](const BurnedInText& t) { return t.kind != "marker"; });
}

// Fraction of the pixels of `box` at 0 (black) in `image`.
double BlackShare(const GrayImage& image, const PixelBox& box) {
  int black = 0;
  for (int y = box.y; y < box.y + box.height; ++y) {
    for (int x = box.x; x < box.x + box.width; ++x) black += image.pixels[static_cast<size_t>(y) * image.width + x] == 0;
  }
  return static_cast<double>(black) / (box.width * box.height);
}

TEST(BurnedIn, ModesParseAndBadOnesAreNamed) {
  EXPECT_EQ(*ParseBurnedInMode("redact"), BurnedInMode::kRedact);
  EXPECT_EQ(*ParseBurnedInMode("off"), BurnedInMode::kOff);
  EXPECT_EQ(BurnedInModeName(*ParseBurnedInMode("quarantine")), "quarantine");
  auto bad = ParseBurnedInMode("blur");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("\"blur\""), std::string::npos);
}

TEST(BurnedIn, AMissingModelIsReportedWithThePackageToInstall) {
  BurnedInOptions o;
  o.tessdata_dir = ::testing::TempDir() + "/no_tessdata_here";
  auto d = TextDetector::Open(o);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(d.status().message().find("tesseract-ocr-eng"), std::string::npos);
}

// The acceptance figures at a test's scale (tests/bench/burned_in_detection
// measures them on more images): at least 95 % of the images with printed
// PHI caught, at most 2 % of the clean ones (which all carry laterality and
// view markers) flagged.
TEST(BurnedIn, CatchesPrintedPhiAndLetsMarkersPass) {
  const std::string dir = ::testing::TempDir() + "/burned_in_detect";
  fs::remove_all(dir);
  SynthOptions so;
  so.site = "OCR";
  so.patients = 40;
  so.image_size = 384;
  so.seed = 3;
  so.burned_in_fraction = 0.5;
  so.markers = true;
  auto synth = WriteSyntheticSite(so, dir);
  ASSERT_TRUE(synth.ok()) << synth.status();
  auto detector = TextDetector::Open(BurnedInOptions{});
  ASSERT_TRUE(detector.ok()) << detector.status();
  const auto printed = ByImage(synth->burned_in);
  int phi_images = 0, caught = 0, clean = 0, flagged = 0, phi_lines = 0, lines_hit = 0, markers_seen = 0;
  for (const std::string& file : synth->files) {
    const std::string id = fs::path(file).stem().string();
    auto found = (*detector)->Find(Decode(file));
    ASSERT_TRUE(found.ok()) << found.status();
    markers_seen += found->markers > 0;
    const auto it = printed.find(id);
    ASSERT_NE(it, printed.end()) << "every image carries a marker";
    if (HasPhi(it->second)) {
      ++phi_images;
      caught += !found->text.empty();
      for (const BurnedInText& t : it->second) {
        if (t.kind == "marker") continue;
        ++phi_lines;
        lines_hit += std::any_of(found->text.begin(), found->text.end(), [&](const PixelBox& b) { return Overlap(b, t.box); });
      }
    } else {
      ++clean;
      flagged += !found->text.empty();
    }
  }
  ASSERT_GT(phi_images, 10);
  ASSERT_GT(clean, 10);
  EXPECT_GE(caught, 0.95 * phi_images) << caught << " of " << phi_images;
  EXPECT_GE(lines_hit, 0.95 * phi_lines) << lines_hit << " of " << phi_lines;
  EXPECT_LE(flagged, 0.02 * clean) << flagged << " of " << clean;
  EXPECT_GT(markers_seen, static_cast<int>(synth->files.size()) / 2) << "markers are read as markers";
  fs::remove_all(dir);
}

TEST(BurnedIn, AnEmptyAllowListTurnsMarkersIntoText) {
  const std::string dir = ::testing::TempDir() + "/burned_in_markers";
  fs::remove_all(dir);
  SynthOptions so;
  so.site = "MRK";
  so.patients = 6;
  so.max_studies_per_patient = 1;
  so.image_size = 384;
  so.markers = true;
  auto synth = WriteSyntheticSite(so, dir);
  ASSERT_TRUE(synth.ok()) << synth.status();
  BurnedInOptions strict;
  strict.allowed_markers = {};
  auto detector = TextDetector::Open(strict);
  ASSERT_TRUE(detector.ok()) << detector.status();
  int flagged = 0;
  for (const std::string& file : synth->files) {
    auto found = (*detector)->Find(Decode(file));
    ASSERT_TRUE(found.ok());
    EXPECT_EQ(found->markers, 0);
    flagged += !found->text.empty();
  }
  // Single letters (L, R) are never text; two-letter views and PORTABLE are.
  int multi_letter = 0;
  for (const BurnedInText& t : synth->burned_in) multi_letter += t.box.width > 0 && t.kind == "marker";
  EXPECT_GT(flagged, 0) << "of " << synth->files.size() << " images with " << multi_letter << " markers";
  fs::remove_all(dir);
}

TEST(BurnedIn, StoredPixelsAreBlackedOutUnderEveryPhotometricInterpretation) {
  for (const bool mono1 : {false, true}) {
    const std::string dir = ::testing::TempDir() + "/burned_in_blackout";
    fs::remove_all(dir);
    SynthOptions so;
    so.site = "BLK";
    so.patients = 1;
    so.max_studies_per_patient = 1;
    so.image_size = 256;
    so.style.monochrome1 = mono1;
    so.style.bits_stored = mono1 ? 10 : 12;
    so.style.compression = mono1 ? "rle" : "none";
    auto synth = WriteSyntheticSite(so, dir);
    ASSERT_TRUE(synth.ok());
    DcmFileFormat f;
    ASSERT_TRUE(f.loadFile(synth->files[0].c_str()).good());
    auto shown = DecodeGray(*f.getDataset());
    ASSERT_TRUE(shown.ok());
    const PixelBox box{100, 90, 60, 30};
    ASSERT_LT(BlackShare(*shown, box), 0.5) << "the chest is not black there";
    ASSERT_TRUE(BlackOutStored(*f.getDataset(), *shown, {box}).ok());
    ASSERT_TRUE(MarkPixelsCleaned(*f.getDataset()).ok());
    const std::string out = dir + "/cleaned.dcm";
    ASSERT_TRUE(f.saveFile(out.c_str(), EXS_LittleEndianExplicit).good());
    const GrayImage again = Decode(out);
    // The box's pixels now show as the darkest of the image (the air around
    // the body); outside it nothing changed.
    const uint16_t darkest = *std::min_element(shown->pixels.begin(), shown->pixels.end());
    ASSERT_EQ(again.pixels.size(), shown->pixels.size());
    int in_box_not_darkest = 0, changed_outside = 0;
    for (int y = 0; y < again.height; ++y) {
      for (int x = 0; x < again.width; ++x) {
        const size_t k = static_cast<size_t>(y) * again.width + x;
        const bool inside = x >= box.x && x < box.x + box.width && y >= box.y && y < box.y + box.height;
        if (inside) in_box_not_darkest += again.pixels[k] != darkest;
        else changed_outside += again.pixels[k] != shown->pixels[k];
      }
    }
    EXPECT_EQ(in_box_not_darkest, 0) << (mono1 ? "MONOCHROME1" : "MONOCHROME2");
    EXPECT_EQ(changed_outside, 0) << (mono1 ? "MONOCHROME1" : "MONOCHROME2");
    DcmFileFormat g;
    ASSERT_TRUE(g.loadFile(out.c_str()).good());
    OFString burned, code;
    g.getDataset()->findAndGetOFString(DCM_BurnedInAnnotation, burned);
    EXPECT_EQ(std::string(burned.c_str()), "NO");
    DcmItem* item = nullptr;
    bool clean_pixel_code = false;
    for (int i = 0; g.getDataset()->findAndGetSequenceItem(DCM_DeidentificationMethodCodeSequence, item, i).good(); ++i) {
      item->findAndGetOFString(DCM_CodeValue, code);
      clean_pixel_code = clean_pixel_code || code == "113101";
    }
    EXPECT_TRUE(clean_pixel_code);
  }
}

struct IngestRun {
  IngestSummary summary;
  std::string workspace;
  SynthResult synth;
};

IngestRun IngestWithText(const std::string& name, BurnedInMode mode, double fraction,
                         const std::string& burned_in_annotation = "") {
  const std::string root = ::testing::TempDir() + "/burned_in_ingest_" + name;
  fs::remove_all(root);
  SynthOptions so;
  so.site = "TXT";
  so.patients = 4;
  so.max_studies_per_patient = 1;
  so.image_size = 384;
  so.seed = 5;
  so.burned_in_fraction = fraction;
  so.markers = true;
  auto synth = WriteSyntheticSite(so, root + "/pacs");
  EXPECT_TRUE(synth.ok()) << synth.status();
  // Only the images stay in the folder ingest reads.
  fs::rename(root + "/pacs/labels.csv", root + "/labels.csv");
  synth->labels_csv = root + "/labels.csv";
  fs::remove(root + "/pacs/burned_in.csv");
  if (!burned_in_annotation.empty()) {
    for (const std::string& file : synth->files) {
      DcmFileFormat f;
      EXPECT_TRUE(f.loadFile(file.c_str()).good());
      f.loadAllDataIntoMemory();  // written back to the same file
      f.getDataset()->putAndInsertString(DCM_BurnedInAnnotation, burned_in_annotation.c_str());
      EXPECT_TRUE(f.saveFile(file.c_str(), EXS_LittleEndianExplicit).good());
    }
  }
  IngestOptions o;
  o.workspace = root + "/workspace";
  o.image_size = 128;
  o.threads = 2;
  o.labels_path = synth->labels_csv;
  o.labels.findings = SynthFindings();
  o.burned_in.mode = mode;
  auto summary = IngestDirectory(root + "/pacs", o);
  EXPECT_TRUE(summary.ok()) << summary.status();
  return {summary.ok() ? *summary : IngestSummary{}, o.workspace, *synth};
}

size_t Copies(const std::string& workspace) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(workspace + "/deid")) n += e.is_regular_file();
  return n;
}

TEST(BurnedInIngest, QuarantineKeepsNothingOfAnImageWithText) {
  const IngestRun run = IngestWithText("quarantine", BurnedInMode::kQuarantine, 1.0);
  const int images = run.synth.images;
  ASSERT_GT(images, 2);
  EXPECT_EQ(run.summary.ingested, 0);
  EXPECT_EQ(run.summary.quarantined, images);
  EXPECT_EQ(run.summary.quarantine_reasons.at("burned_in_text"), images);
  EXPECT_EQ(Copies(run.workspace), 0u) << "no de-identified copy of an image with text";
}

TEST(BurnedInIngest, MarkersAloneAreIngested) {
  const IngestRun run = IngestWithText("markers", BurnedInMode::kQuarantine, 0.0);
  EXPECT_EQ(run.summary.ingested, run.synth.images);
  EXPECT_EQ(run.summary.quarantined, 0);
}

TEST(BurnedInIngest, AHeaderThatSaysNoIsTrustedAndOffDoesNotLook) {
  // What the site's configuration chooses: pixels of images that declare no
  // burned-in annotation are not searched, and off searches none.
  const IngestRun declared_no = IngestWithText("declared_no", BurnedInMode::kQuarantine, 1.0, "NO");
  EXPECT_EQ(declared_no.summary.ingested, declared_no.synth.images);
  const IngestRun off = IngestWithText("off", BurnedInMode::kOff, 1.0);
  EXPECT_EQ(off.summary.ingested, off.synth.images);
  // YES is refused by the header alone unless text is being redacted.
  const IngestRun declared_yes = IngestWithText("declared_yes", BurnedInMode::kOff, 0.0, "YES");
  EXPECT_EQ(declared_yes.summary.quarantine_reasons.at("burned_in_annotation"), declared_yes.synth.images);
}

TEST(BurnedInIngest, RedactionBlacksOutTheTextInTheCopyAndTheCache) {
  const IngestRun run = IngestWithText("redact", BurnedInMode::kRedact, 1.0, "YES");
  const int images = run.synth.images;
  ASSERT_EQ(run.summary.ingested, images) << "redact keeps images, YES included";
  EXPECT_EQ(run.summary.redacted, images);
  ASSERT_EQ(Copies(run.workspace), static_cast<size_t>(images));
  auto detector = TextDetector::Open(BurnedInOptions{});
  ASSERT_TRUE(detector.ok());
  // The copies carry pseudonymous names, so each printed line is looked
  // for in every copy: it must be blacked out in one of them, and no copy
  // may still hold text.
  std::vector<const BurnedInText*> phi;
  for (const BurnedInText& t : run.synth.burned_in) {
    if (t.kind != "marker") phi.push_back(&t);
  }
  std::vector<double> best(phi.size(), 0.0);
  for (const auto& e : fs::directory_iterator(run.workspace + "/deid")) {
    DcmFileFormat f;
    ASSERT_TRUE(f.loadFile(e.path().c_str()).good());
    OFString burned;
    f.getDataset()->findAndGetOFString(DCM_BurnedInAnnotation, burned);
    EXPECT_EQ(std::string(burned.c_str()), "NO");
    auto shown = DecodeGray(*f.getDataset());
    ASSERT_TRUE(shown.ok());
    auto again = (*detector)->Find(*shown);
    ASSERT_TRUE(again.ok());
    EXPECT_TRUE(again->text.empty()) << e.path() << ": " << again->text.size() << " text lines left";
    for (size_t i = 0; i < phi.size(); ++i) best[i] = std::max(best[i], BlackShare(*shown, phi[i]->box));
  }
  double sum = 0;
  for (size_t i = 0; i < phi.size(); ++i) {
    // The box includes the spaces between words and anti-aliased fringes.
    EXPECT_GT(best[i], 0.6) << phi[i]->image_id << " " << phi[i]->kind;
    sum += best[i];
  }
  ASSERT_FALSE(phi.empty());
  EXPECT_GT(sum / static_cast<double>(phi.size()), 0.85);
  // The cache holds the same blacked-out pixels, resized: it has more black
  // pixels than the cache of the same files ingested without redaction.
  const IngestRun plain = IngestWithText("redact_reference", BurnedInMode::kOff, 1.0);
  auto zeros = [](const std::string& workspace) {
    int64_t n = 0;
    for (const auto& e : fs::directory_iterator(workspace + "/cache")) {
      std::ifstream in(e.path(), std::ios::binary);
      for (char c; in.get(c);) n += c == 0;
    }
    return n;
  };
  EXPECT_GT(zeros(run.workspace), zeros(plain.workspace) + 50 * images);
}

}  // namespace
}  // namespace fedtune::ingest
