// Data that stays put at a site: the split and the labelled findings are
// pinned per workspace, labels are kept by finding name (with history), a
// known patient keeps its split, images ingested without labels are
// labelled later, and a job's snapshot does not move.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "site-agent/dataset/labels.h"
#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/site_key.h"
#include "site-agent/ingest/site_stats.h"
#include "site-agent/ingest/synth.h"
#include "site-agent/ingest/workspace_index.h"

namespace fedtune::ingest {
namespace {

namespace fs = std::filesystem;

class WorkspaceData : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = ::testing::TempDir() + "/workspace_data_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(root_);
    SynthOptions synth;
    synth.site = "PINS";
    synth.patients = 10;
    synth.image_size = 96;
    auto written = WriteSyntheticSite(synth, root_ + "/pacs");
    ASSERT_TRUE(written.ok()) << written.status();
    images_ = written->images;
    labels_csv_ = written->labels_csv;
    fs::rename(labels_csv_, root_ + "/labels.csv");
    labels_csv_ = root_ + "/labels.csv";
  }
  void TearDown() override { fs::remove_all(root_); }

  IngestOptions Options(bool with_labels = true) {
    IngestOptions o;
    o.workspace = root_ + "/ws";
    o.image_size = 64;
    o.filters.min_rows = o.filters.min_columns = 64;
    o.threads = 2;
    if (with_labels) o.labels_path = labels_csv_;
    o.labels.findings = SynthFindings();
    o.split_seed = 3;
    return o;
  }

  // What labels.csv says per image id (through the keyed file-name HMACs).
  std::map<std::string, std::map<std::string, float>> Expected(const std::string& csv) {
    dataset::LabelOptions lo;
    lo.findings = SynthFindings();
    auto table = dataset::ParseLabels(*ReadFileBytes(csv), lo);
    EXPECT_TRUE(table.ok()) << table.status();
    auto key = LoadOrCreateSiteKey(root_ + "/ws/site.key");
    EXPECT_TRUE(key.ok());
    std::map<std::string, std::string> image_of;  // hmac -> image id
    sqlite3* db = nullptr;
    sqlite3_open((root_ + "/ws/index.sqlite").c_str(), &db);
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, "SELECT key_hmac, image_id FROM label_keys WHERE kind = 'file_stem'", -1, &st, nullptr);
    while (sqlite3_step(st) == SQLITE_ROW) {
      image_of[reinterpret_cast<const char*>(sqlite3_column_text(st, 0))] =
          reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    std::map<std::string, std::map<std::string, float>> out;
    for (const auto& [stem, values] : table->by_key) {
      auto it = image_of.find(LabelKeyHmac(*key, LabelKey::kFileStem, stem));
      if (it == image_of.end()) continue;
      for (size_t f = 0; f < values.size(); ++f) out[it->second][table->findings[f]] = values[f];
    }
    return out;
  }

  std::map<std::string, std::map<std::string, float>> Stored(int64_t as_of = -1) {
    auto images = ReadIndexedImages(root_ + "/ws", as_of);
    EXPECT_TRUE(images.ok()) << images.status();
    std::map<std::string, std::map<std::string, float>> out;
    for (const auto& im : *images) out[im.image_id] = im.labels;
    return out;
  }

  std::map<std::string, std::string> Splits(int64_t as_of = -1) {
    std::map<std::string, std::string> out;
    const std::vector<IndexedImage> images = ReadIndexedImages(root_ + "/ws", as_of).value();
    for (const auto& im : images) out[im.image_id] = im.split;
    return out;
  }

  std::string root_, labels_csv_;
  int images_ = 0;
};

TEST_F(WorkspaceData, ASplitChangeIsRefusedAndResplittingIsOnPurpose) {
  ASSERT_TRUE(IngestDirectory(root_ + "/pacs", Options()).ok());
  IngestOptions other = Options();
  other.split_seed = 4;
  auto refused = IngestDirectory(root_ + "/pacs", other);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("split seed=3"), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("fedtune-site split --config site.toml --resplit"), std::string::npos);
  other.split.train = 0.5;
  other.split.test = 0.4;
  other.resplit = true;
  other.labels_path.clear();
  auto session = Ingestor::Open(other);
  ASSERT_TRUE(session.ok()) << session.status();
  auto moved = (*session)->Resplit();
  ASSERT_TRUE(moved.ok()) << moved.status();
  ASSERT_TRUE((*session)->Commit().ok());
  session->reset();
  EXPECT_EQ(moved->patients, 10);
  EXPECT_GT(moved->patients_moved, 0);
  // The new settings are the pinned ones now; the old are refused.
  other.resplit = false;
  EXPECT_TRUE(IngestDirectory(root_ + "/pacs", other).ok());
  EXPECT_EQ(IngestDirectory(root_ + "/pacs", Options()).status().code(), absl::StatusCode::kFailedPrecondition);
  auto meta = ReadIndexMeta(root_ + "/ws");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->split, "seed=4 train=0.5 val=0.10000000000000001 test=0.40000000000000002");
}

TEST_F(WorkspaceData, AKnownPatientsNewImageJoinsThatPatientsSplit) {
  // A scratch ingest of everything finds a patient with two images and the
  // file of one of them (by its keyed file-name HMAC).
  IngestOptions scratch = Options(false);
  scratch.workspace = root_ + "/scratch";
  ASSERT_TRUE(IngestDirectory(root_ + "/pacs", scratch).ok());
  std::map<std::string, std::vector<IndexedImage>> by_patient;
  const std::vector<IndexedImage> all = ReadIndexedImages(scratch.workspace).value();
  for (const auto& im : all) by_patient[im.patient].push_back(im);
  std::string patient, image;
  for (const auto& [p, images] : by_patient) {
    if (images.size() >= 2) {
      patient = p;
      image = images.front().image_id;
      break;
    }
  }
  ASSERT_FALSE(patient.empty()) << "the synthetic site has a patient with two images";
  const std::string natural = by_patient[patient].front().split;
  const std::vector<uint8_t> key = LoadOrCreateSiteKey(scratch.workspace + "/site.key").value();
  std::string held_back;
  sqlite3* db = nullptr;
  sqlite3_open((scratch.workspace + "/index.sqlite").c_str(), &db);
  for (const auto& e : fs::directory_iterator(root_ + "/pacs")) {
    const std::string sql = "SELECT image_id FROM label_keys WHERE kind = 'file_stem' AND key_hmac = '" +
                            LabelKeyHmac(key, LabelKey::kFileStem, e.path().stem().string()) + "'";
    sqlite3_stmt* st = nullptr;
    sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr);
    if (sqlite3_step(st) == SQLITE_ROW && reinterpret_cast<const char*>(sqlite3_column_text(st, 0)) == image) {
      held_back = e.path().string();
    }
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  ASSERT_FALSE(held_back.empty());
  // The real workspace (same key): everything but that file, then the
  // patient is moved to another split by hand, then the file arrives.
  fs::create_directories(root_ + "/ws");
  fs::copy_file(scratch.workspace + "/site.key", root_ + "/ws/site.key");
  fs::rename(held_back, root_ + "/held_back.dcm");
  ASSERT_TRUE(IngestDirectory(root_ + "/pacs", Options(false)).ok());
  const std::string moved_to = natural == "test" ? "train" : "test";
  db = nullptr;
  sqlite3_open((root_ + "/ws/index.sqlite").c_str(), &db);
  const std::string sql = "UPDATE images SET split = '" + moved_to + "' WHERE patient = '" + patient + "'";
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  fs::rename(root_ + "/held_back.dcm", root_ + "/pacs/late.dcm");
  ASSERT_TRUE(IngestDirectory(root_ + "/pacs", Options(false)).ok());
  const std::map<std::string, std::string> splits = Splits();
  ASSERT_TRUE(splits.count(image));
  EXPECT_EQ(splits.at(image), moved_to) << "the late image joins its patient's split, not the hash's";
}

TEST_F(WorkspaceData, LabelsAreKeptByFindingNameWhateverTheOrder) {
  ASSERT_TRUE(IngestDirectory(root_ + "/pacs", Options()).ok());
  const auto expected = Expected(labels_csv_);
  ASSERT_EQ(expected.size(), static_cast<size_t>(images_));
  EXPECT_EQ(Stored(), expected);
  // The same findings in another order: accepted, and nothing is misread.
  IngestOptions reordered = Options();
  std::reverse(reordered.labels.findings.begin(), reordered.labels.findings.end());
  auto again = IngestDirectory(root_ + "/pacs", reordered);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->labels_updated, 0);
  EXPECT_EQ(Stored(), expected);
  // Another set of findings is refused, naming what to do.
  IngestOptions fewer = Options();
  fewer.labels.findings.pop_back();
  auto refused = IngestDirectory(root_ + "/pacs", fewer);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("--findings-changed"), std::string::npos) << refused.status();
}

TEST_F(WorkspaceData, ImagesIngestedWithoutLabelsAreLabelledLaterAndCorrectionsRecorded) {
  auto bare = IngestDirectory(root_ + "/pacs", Options(false));
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->unlabelled, images_);
  auto stats = ReadSiteStats(root_ + "/ws");
  ASSERT_TRUE(stats.ok());
  int64_t without = 0;
  for (const auto& [name, split] : stats->splits) without += split.without_labels;
  EXPECT_EQ(without, images_);
  // fedtune-site labels import.
  IngestOptions import = Options();
  auto session = Ingestor::Open(import);
  ASSERT_TRUE(session.ok()) << session.status();
  auto first = (*session)->ImportLabels();
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE((*session)->Commit().ok());
  session->reset();
  EXPECT_EQ(first->matched, images_);
  EXPECT_EQ(first->changed, images_);
  EXPECT_EQ(first->not_matched, 0);
  EXPECT_EQ(first->images_without_row, 0);
  const int64_t labelled_at = ReadIndexMeta(root_ + "/ws")->data_seq;
  EXPECT_EQ(Stored(), Expected(labels_csv_));
  // A corrected file: one image's Cardiomegaly flipped, one row for an image
  // that is not here. Only the change is recorded, with a new number.
  std::string csv = *ReadFileBytes(labels_csv_);
  const auto expected = Expected(labels_csv_);
  const std::string header = csv.substr(0, csv.find('\n') + 1);
  std::vector<std::string> lines;
  std::istringstream in(csv.substr(header.size()));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  // The first row's image: flip its Cardiomegaly (column 2 of the VinDr layout) on every rater row.
  const std::string first_key = lines.front().substr(0, lines.front().find(','));
  std::string corrected = header;
  for (std::string line : lines) {
    if (line.rfind(first_key + ",", 0) == 0) {
      std::vector<std::string> cells = absl::StrSplit(line, ',');
      cells[2] = cells[2] == "1" ? "0" : "1";
      line = absl::StrJoin(cells, ",");
    }
    corrected += line + "\n";
  }
  corrected += "NOT_HERE_00001,R1,1,0,0,0\n";
  ASSERT_TRUE(WriteFileAtomically(root_ + "/corrected.csv", corrected).ok());
  import.labels_path = root_ + "/corrected.csv";
  session = Ingestor::Open(import);
  ASSERT_TRUE(session.ok()) << session.status();
  auto second = (*session)->ImportLabels();
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE((*session)->Commit().ok());
  session->reset();
  EXPECT_EQ(second->not_matched, 1);
  EXPECT_EQ(second->changed, 1);
  EXPECT_EQ(second->unchanged, images_ - 1);
  EXPECT_EQ(Stored(labelled_at), expected) << "as of the first import, the first labels";
  EXPECT_NE(Stored(), expected);
}

TEST_F(WorkspaceData, AJobsSnapshotKeepsItsImagesAndLabels) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(root_ + "/pacs")) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  fs::create_directories(root_ + "/later");
  for (size_t i = files.size() / 2; i < files.size(); ++i) {
    fs::rename(files[i], root_ + "/later/" + fs::path(files[i]).filename().string());
  }
  ASSERT_TRUE(IngestDirectory(root_ + "/pacs", Options()).ok());
  auto snap = TakeJobSnapshot(root_ + "/ws", "job-1");
  ASSERT_TRUE(snap.ok()) << snap.status();
  const auto at_start = Stored(*snap);
  // Images arrive while the job runs.
  auto later = IngestDirectory(root_ + "/later", Options());
  ASSERT_TRUE(later.ok());
  ASSERT_GT(later->ingested, 0);
  EXPECT_EQ(*TakeJobSnapshot(root_ + "/ws", "job-1"), *snap) << "the job keeps its snapshot";
  EXPECT_EQ(Stored(*snap), at_start);
  EXPECT_EQ(Stored().size(), static_cast<size_t>(images_));
  auto stats = ReadSiteStats(root_ + "/ws");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->latest_job, "job-1");
  EXPECT_EQ(stats->images_since_latest_job, later->ingested);
  EXPECT_GT(*TakeJobSnapshot(root_ + "/ws", "job-2"), *snap) << "the next job sees them";
}

TEST_F(WorkspaceData, AJobStartedBeforeAResplitKeepsItsSplits) {
  ASSERT_TRUE(IngestDirectory(root_ + "/pacs", Options()).ok());
  auto snap = TakeJobSnapshot(root_ + "/ws", "job-1");
  ASSERT_TRUE(snap.ok());
  const std::map<std::string, std::string> before = Splits(*snap);
  IngestOptions other = Options();
  other.labels_path.clear();
  // Another seed and other ratios: a patient keeps its split with chance
  // 0.24, so all 10 keeping theirs (nothing to test) has chance 6e-7.
  other.split_seed = 77;
  other.split = {0.1, 0.1, 0.8};
  other.resplit = true;
  auto session = Ingestor::Open(other);
  ASSERT_TRUE(session.ok()) << session.status();
  auto moved = (*session)->Resplit();
  ASSERT_TRUE(moved.ok() && (*session)->Commit().ok());
  session->reset();
  ASSERT_GT(moved->images_moved, 0);
  const std::map<std::string, std::string> now = Splits();
  EXPECT_EQ(Splits(*snap), before) << "the running job keeps its splits";
  EXPECT_NE(now, before);
  EXPECT_EQ(Splits(TakeJobSnapshot(root_ + "/ws", "job-2").value()), now) << "the next job sees the new splits";
}

// Positives, negatives and unlabelled images of a finding add up to the
// split's images: one withheld means all three are.
TEST(SiteStatsShareable, AFindingsCountsAreWithheldTogether) {
  SiteStats s;
  s.findings = {"rare", "common"};
  SplitStats& train = s.splits["train"];
  train.images = 60;
  train.patients = 40;
  train.positives = {2, 20};
  train.negatives = {58, 40};
  train.unlabelled = {0, 0};
  const SiteStats shared = Shareable(s, 5);
  const SplitStats& t = shared.splits.at("train");
  EXPECT_EQ(t.images, 60);
  EXPECT_EQ(t.positives[0], -1);
  EXPECT_EQ(t.negatives[0], -1) << "60 - 58 would give the 2 positives away";
  EXPECT_EQ(t.unlabelled[0], -1);
  EXPECT_EQ(t.positives[1], 20);
  EXPECT_EQ(t.negatives[1], 40);
  EXPECT_EQ(t.unlabelled[1], 0);
}

// The quarantine reasons add up to the total: one withheld reason would be
// the total minus the others, so another is withheld with it.
TEST(SiteStatsShareable, AWithheldQuarantineReasonCannotBeDerivedFromTheTotal) {
  SiteStats s;
  s.quarantine_reasons = {{"modality", 40}, {"burned_in_annotation", 2}, {"too_small", 9}};
  s.quarantined = 51;
  SiteStats shared = Shareable(s, 5);
  EXPECT_EQ(shared.quarantined, 51);
  EXPECT_EQ(shared.quarantine_reasons.at("burned_in_annotation"), -1);
  EXPECT_EQ(shared.quarantine_reasons.at("too_small"), -1) << "51 - 40 - 9 would give the 2 away";
  EXPECT_EQ(shared.quarantine_reasons.at("modality"), 40);
  // Nothing else to withhold: the total goes.
  s.quarantine_reasons = {{"modality", 3}};
  s.quarantined = 3;
  shared = Shareable(s, 5);
  EXPECT_EQ(shared.quarantined, -1);
  s.quarantine_reasons = {{"modality", 30}, {"too_small", 2}};
  s.quarantined = 32;
  shared = Shareable(s, 5);
  EXPECT_EQ(shared.quarantine_reasons.at("modality"), -1);
  EXPECT_EQ(shared.quarantined, 32);
}

TEST_F(WorkspaceData, AFirstReleaseIndexWithLabelsByPositionIsMigrated) {
  // The index as the first release wrote it: labels by position in the
  // findings of the time.
  fs::create_directories(root_ + "/ws");
  sqlite3* db = nullptr;
  sqlite3_open((root_ + "/ws/index.sqlite").c_str(), &db);
  const char* sql =
      "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE images(image_id TEXT PRIMARY KEY, source_sha256 TEXT UNIQUE NOT NULL, patient TEXT NOT NULL,"
      " study TEXT NOT NULL, split TEXT NOT NULL, labels TEXT NOT NULL, shard INTEGER NOT NULL,"
      " offset INTEGER NOT NULL, size INTEGER NOT NULL);"
      "CREATE TABLE quarantine(source_sha256 TEXT PRIMARY KEY, reason TEXT NOT NULL, detail TEXT NOT NULL);"
      "INSERT INTO meta VALUES('image_size', '64'), ('findings', 'A\x1f" "B\x1f" "C');"
      "INSERT INTO images VALUES('img1', 'sha1', 'P1', 'S1', 'train', '[1,0,-1]', 0, 0, 64);"
      "INSERT INTO images VALUES('img2', 'sha2', 'P2', 'S2', 'test', '[0,1,1]', 0, 4096, 64);";
  ASSERT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  const auto stored = Stored();
  EXPECT_EQ(stored.at("img1"), (std::map<std::string, float>{{"A", 1}, {"B", 0}}));
  EXPECT_EQ(stored.at("img2"), (std::map<std::string, float>{{"A", 0}, {"B", 1}, {"C", 1}}));
  EXPECT_EQ(Stored(), stored) << "migrated once";
}

}  // namespace
}  // namespace fedtune::ingest
