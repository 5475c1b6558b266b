#include "site-agent/runner/cache_dataset.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <vector>

#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/synth.h"

namespace fedtune::site {
namespace {

namespace fs = std::filesystem;

ingest::IngestOptions Options(const std::string& workspace, const std::string& labels, int bits) {
  ingest::IngestOptions o;
  o.workspace = workspace;
  o.image_size = 64;
  o.cache_bits = bits;
  o.filters.min_rows = o.filters.min_columns = 64;
  o.labels_path = labels;
  o.labels.findings = ingest::SynthFindings();
  o.split_seed = 3;
  return o;
}

// The same site cached as uint8 and as uint16 gives the same images, labels
// and pixels (the uint16 cache within one uint8 rounding step of the uint8
// one, and finer: values between the uint8 steps occur).
TEST(CacheDataset, Uint8AndUint16CachesHoldTheSameImages) {
  const std::string root = ::testing::TempDir() + "/cache_dataset_bits";
  fs::remove_all(root);
  ingest::SynthOptions synth;
  synth.site = "BITS";
  synth.patients = 10;
  synth.image_size = 96;
  synth.style.bits_stored = 14;
  auto written = ingest::WriteSyntheticSite(synth, root + "/pacs");
  ASSERT_TRUE(written.ok()) << written.status();
  for (int bits : {8, 16}) {
    if (bits == 16) {  // the same site key, hence the same pseudonyms and splits
      fs::create_directories(root + "/ws16");
      fs::copy_file(root + "/ws8/site.key", root + "/ws16/site.key");
    }
    auto s = ingest::IngestDirectory(root + "/pacs", Options(root + "/ws" + std::to_string(bits), written->labels_csv, bits));
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_EQ(s->ingested, written->images);
  }
  ASSERT_TRUE(fs::exists(root + "/ws8/cache/" + ingest::CacheShardName(0, 8)));
  ASSERT_TRUE(fs::exists(root + "/ws16/cache/" + ingest::CacheShardName(0, 16)));
  EXPECT_EQ(fs::file_size(root + "/ws16/cache/" + ingest::CacheShardName(0, 16)),
            2 * fs::file_size(root + "/ws8/cache/" + ingest::CacheShardName(0, 8)));

  CacheDatasetOptions co;
  co.findings = ingest::SynthFindings();
  size_t total = 0;
  for (const char* split : {"train", "val", "test"}) {
    co.split = split;
    auto u8 = CacheDataset::Open(root + "/ws8", co);
    auto u16 = CacheDataset::Open(root + "/ws16", co);
    ASSERT_TRUE(u8.ok() && u16.ok()) << u8.status() << u16.status();
    ASSERT_EQ((*u8)->size(), (*u16)->size()) << split;
    total += (*u8)->size();
    std::vector<float> p8(64 * 64), p16(64 * 64), l8(co.findings.size()), l16(co.findings.size());
    for (size_t i = 0; i < (*u8)->size(); ++i) {
      ASSERT_TRUE((*u8)->Get(i, p8, l8).ok());
      ASSERT_TRUE((*u16)->Get(i, p16, l16).ok());
      EXPECT_EQ(l8, l16);
      int between_steps = 0;
      for (size_t k = 0; k < p8.size(); ++k) {
        ASSERT_NEAR(p8[k], p16[k], 0.5f / 255.0f + 1e-6f) << split << " image " << i << " pixel " << k;
        const float steps = p16[k] * 255.0f;
        if (std::fabs(steps - std::round(steps)) > 0.05f) ++between_steps;
      }
      EXPECT_GT(between_steps, 100) << "the uint16 cache should keep more than 256 levels";
    }
  }
  EXPECT_EQ(total, static_cast<size_t>(written->images));

  // One pixel format per workspace: adding 16-bit images to an 8-bit cache is refused.
  auto mixed = ingest::IngestDirectory(root + "/pacs", Options(root + "/ws8", written->labels_csv, 16));
  ASSERT_FALSE(mixed.ok());
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(mixed.status().message().find("cache_bits = 8"), std::string::npos) << mixed.status();
  // A workspace ingested before the pixel format was recorded holds uint8.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((root + "/ws8/index.sqlite").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "DELETE FROM meta WHERE key = 'cache_bits'", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto legacy = ingest::IngestDirectory(root + "/pacs", Options(root + "/ws8", written->labels_csv, 16));
  ASSERT_FALSE(legacy.ok());
  EXPECT_NE(legacy.status().message().find("cache_bits = 8"), std::string::npos) << legacy.status();
  co.split = "train";
  EXPECT_TRUE(CacheDataset::Open(root + "/ws8", co).ok());
}

}  // namespace
}  // namespace fedtune::site

namespace fedtune::site {
namespace {

// A finding without a label is masked (-1), never a negative; training
// leaves out images with no known label for any of the job's findings.
TEST(CacheDataset, UnlabelledImagesAreMaskedAndLeftOutOfTraining) {
  const std::string root = ::testing::TempDir() + "/cache_dataset_unlabelled";
  std::filesystem::remove_all(root);
  ingest::SynthOptions synth;
  synth.site = "BARE";
  synth.patients = 8;
  synth.image_size = 96;
  auto written = ingest::WriteSyntheticSite(synth, root + "/pacs");
  ASSERT_TRUE(written.ok()) << written.status();
  std::filesystem::remove(written->labels_csv);
  ingest::IngestOptions o;
  o.workspace = root + "/ws";
  o.image_size = 64;
  o.filters.min_rows = o.filters.min_columns = 64;
  o.labels.findings = ingest::SynthFindings();
  o.split.train = 1.0;
  o.split.val = o.split.test = 0.0;
  ASSERT_TRUE(ingest::IngestDirectory(root + "/pacs", o).ok());
  // The workspace knows the findings from an earlier labelled import.
  CacheDatasetOptions all;
  all.findings = {"Cardiomegaly"};
  auto missing = CacheDataset::Open(o.workspace, all);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition) << "no labels at all yet";
  std::ofstream(root + "/labels.csv") << "image_id,rad_id,Cardiomegaly,Pleural effusion,Nodule/Mass,Pneumothorax\n"
                                      << "BARE_00000,R1,1,0,0,0\n";
  o.labels_path = root + "/labels.csv";
  auto session = ingest::Ingestor::Open(o);
  ASSERT_TRUE(session.ok()) << session.status();
  auto imported = (*session)->ImportLabels();
  ASSERT_TRUE(imported.ok()) << imported.status();
  ASSERT_TRUE((*session)->Commit().ok());
  session->reset();
  ASSERT_EQ(imported->matched, 1);
  auto everything = CacheDataset::Open(o.workspace, all);
  ASSERT_TRUE(everything.ok()) << everything.status();
  EXPECT_EQ((*everything)->size(), static_cast<size_t>(written->images));
  int known = 0;
  for (size_t i = 0; i < (*everything)->size(); ++i) {
    float y = 0;
    ASSERT_TRUE((*everything)->GetLabels(i, std::span<float>(&y, 1)).ok());
    EXPECT_TRUE(y == -1.0f || y == 1.0f) << y;
    known += y == 1.0f;
  }
  EXPECT_EQ(known, 1);
  CacheDatasetOptions train = all;
  train.labelled_only = true;
  auto labelled = CacheDataset::Open(o.workspace, train);
  ASSERT_TRUE(labelled.ok());
  EXPECT_EQ((*labelled)->size(), 1u);
}

}  // namespace
}  // namespace fedtune::site
