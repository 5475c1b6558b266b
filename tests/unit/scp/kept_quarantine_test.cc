// Raw quarantined files: not kept unless asked; when kept, private, listed
// with the reason ingest recorded, and purged after the retention period,
// also when the receiver starts.
#include "site-agent/dicom_scp/kept_quarantine.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "absl/strings/match.h"

#include "site-agent/config/site_config.h"
#include "site-agent/dicom_scp/store_scp.h"
#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/synth.h"

namespace fedtune::scp {
namespace {

namespace fs = std::filesystem;

void Age(const fs::path& p, double days) {
  fs::last_write_time(p, fs::file_time_type::clock::now() -
                             std::chrono::duration_cast<fs::file_time_type::duration>(
                                 std::chrono::duration<double>(days * 86400)));
}

TEST(KeptQuarantine, OffByDefaultAndRetentionIsConfigured) {
  auto plain = site::ParseSiteConfig("[site]\nid = \"h\"\nworkspace = \"ws\"\n", "/tmp/site.toml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->scp.options.keep_quarantined);
  EXPECT_EQ(plain->scp.options.quarantine_retention_days, 7);
  auto kept = site::ParseSiteConfig(
      "[site]\nid = \"h\"\nworkspace = \"ws\"\n[scp]\nkeep_quarantined = true\nquarantine_retention_days = 2\n",
      "/tmp/site.toml");
  ASSERT_TRUE(kept.ok()) << kept.status();
  EXPECT_TRUE(kept->scp.options.keep_quarantined);
  EXPECT_EQ(kept->scp.options.quarantine_retention_days, 2);
  EXPECT_FALSE(site::ParseSiteConfig("[site]\nid = \"h\"\nworkspace = \"ws\"\n[scp]\nquarantine_retention_days = 0\n",
                                     "/tmp/site.toml")
                   .ok());
}

TEST(KeptQuarantine, KeptPrivateListedWithTheReasonAndPurgedByAge) {
  const std::string root = ::testing::TempDir() + "/kept_quarantine_" + std::to_string(getpid());
  fs::remove_all(root);
  ingest::SynthOptions synth;
  synth.site = "KQ";
  synth.patients = 2;
  synth.image_size = 96;
  auto written = ingest::WriteSyntheticSite(synth, root + "/pacs");
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_GE(written->files.size(), 2u);
  fs::rename(written->labels_csv, root + "/labels.csv");  // only the radiographs are sent
  // Ingest refuses every radiograph here: this workspace takes MR only.
  ingest::IngestOptions io;
  io.workspace = root + "/ws";
  io.image_size = 32;
  io.filters.modalities = {"MR"};
  auto summary = ingest::IngestDirectory(root + "/pacs", io);
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(summary->quarantined, static_cast<int>(written->files.size()));

  const std::string incoming = root + "/incoming";
  EXPECT_TRUE(ListKeptQuarantine(incoming, io.workspace)->empty());  // nothing kept yet
  ASSERT_TRUE(KeepQuarantined(incoming, written->files[0]).ok());
  ASSERT_TRUE(KeepQuarantined(incoming, written->files[1]).ok());
  EXPECT_FALSE(fs::exists(written->files[0]));  // moved, not copied
  EXPECT_EQ(fs::status(KeptQuarantineDir(incoming)).permissions() & fs::perms::all, fs::perms::owner_all);
  auto kept = ListKeptQuarantine(incoming, io.workspace);
  ASSERT_TRUE(kept.ok()) << kept.status();
  ASSERT_EQ(kept->size(), 2u);
  EXPECT_EQ((*kept)[0].reason, "modality");
  EXPECT_TRUE(absl::StartsWith((*kept)[0].detail, "modality ")) << (*kept)[0].detail;
  EXPECT_TRUE(absl::EndsWith((*kept)[0].detail, " is not one of MR")) << (*kept)[0].detail;
  EXPECT_LT((*kept)[0].age_days, 0.01);

  // One kept 8 days ago: a 7-day retention deletes it and keeps the other.
  const fs::path old = fs::path(KeptQuarantineDir(incoming)) / fs::path(written->files[0]).filename();
  Age(old, 8);
  auto purged = PurgeKeptQuarantine(incoming, 7);
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(*purged, 1);
  EXPECT_FALSE(fs::exists(old));
  EXPECT_EQ(ListKeptQuarantine(incoming, io.workspace)->size(), 1u);

  // The receiver purges at start-up too.
  const fs::path other = fs::path(KeptQuarantineDir(incoming)) / fs::path(written->files[1]).filename();
  Age(other, 3);
  StoreScpOptions so;
  so.port = 0;
  so.allowed_calling_aes = {"PACS"};
  so.incoming_dir = incoming;
  so.keep_quarantined = true;
  so.quarantine_retention_days = 2;
  auto receiver = StoreScp::Start(so, io);
  ASSERT_TRUE(receiver.ok()) << receiver.status();
  EXPECT_FALSE(fs::exists(other));
  (*receiver)->Stop();
  EXPECT_EQ(*PurgeKeptQuarantine(incoming, 0), 0);
  fs::remove_all(root);
}

}  // namespace
}  // namespace fedtune::scp
