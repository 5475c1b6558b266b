// Real-world DICOM variety: every file python3-pydicom ships as test data is
// loaded, de-identified and decoded, and each either succeeds or yields a
// reason that can be recorded. Nothing crashes.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <string>

#include "site-agent/ingest/deidentifier.h"
#include "site-agent/ingest/pixels.h"

namespace fedtune::ingest {
namespace {

constexpr char kPydicomTestFiles[] = "/usr/lib/python3/dist-packages/pydicom/data/test_files";

// "ok WxH" or the reason the file cannot be used.
std::string Outcome(const std::string& path) {
  DcmFileFormat file;
  OFCondition c = file.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
  if (c.bad()) return std::string("not readable as DICOM: ") + c.text();
  const std::vector<uint8_t> key(32, 7);
  auto deid = DeidentifyDataset(*file.getDataset(), key, DeidOptions{});
  if (!deid.ok()) return std::string("de-identification failed: ") + std::string(deid.status().message());
  auto img = DecodeGray(*file.getDataset());
  if (!img.ok()) return std::string(img.status().message());
  return "ok " + std::to_string(img->width) + "x" + std::to_string(img->height);
}

TEST(PydicomTestFiles, EveryFileIsUsedOrGivesAReason) {
  if (!std::filesystem::is_directory(kPydicomTestFiles)) {
    GTEST_SKIP() << "python3-pydicom's test files are not installed (deploy/install-deps.sh installs python3-pydicom)";
  }
  std::map<std::string, std::string> outcomes;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(kPydicomTestFiles)) {
    if (!entry.is_regular_file()) continue;
    const std::string path = entry.path().string();
    outcomes[path.substr(sizeof(kPydicomTestFiles))] = Outcome(path);
  }
  int ok = 0;
  for (const auto& [name, outcome] : outcomes) {
    std::cout << name << ": " << outcome << "\n";
    EXPECT_FALSE(outcome.empty()) << name;
    ok += outcome.rfind("ok ", 0) == 0;
  }
  std::cout << ok << " of " << outcomes.size() << " files decoded\n";
  EXPECT_GT(outcomes.size(), 50u);
  // Known-good monochrome images among them (CT, MR in several syntaxes).
  EXPECT_EQ(outcomes["CT_small.dcm"].rfind("ok 128x128", 0), 0u) << outcomes["CT_small.dcm"];
  EXPECT_EQ(outcomes["MR_small_RLE.dcm"].rfind("ok 64x64", 0), 0u) << outcomes["MR_small_RLE.dcm"];
  EXPECT_EQ(outcomes["MR_small_jpeg_ls_lossless.dcm"].rfind("ok 64x64", 0), 0u);
  EXPECT_EQ(outcomes["MR_small_bigendian.dcm"].rfind("ok 64x64", 0), 0u);
  EXPECT_EQ(outcomes["SC_rgb_rle.dcm"], "not a monochrome image");
  EXPECT_GE(ok, 10);
}

}  // namespace
}  // namespace fedtune::ingest
