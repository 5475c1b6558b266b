#include "site-agent/ingest/inflation.h"
#include "site-agent/ingest/ingest.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "site-agent/ingest/synth.h"

namespace fedtune::ingest {
namespace {

namespace fs = std::filesystem;

struct Row {
  std::string patient, split, labels;
  int64_t shard, offset;
};

std::vector<Row> Images(const std::string& workspace) {
  sqlite3* db = nullptr;
  sqlite3_open((workspace + "/index.sqlite").c_str(), &db);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT patient, split, labels, shard, offset FROM images", -1, &st, nullptr);
  std::vector<Row> rows;
  while (sqlite3_step(st) == SQLITE_ROW) {
    rows.push_back({reinterpret_cast<const char*>(sqlite3_column_text(st, 0)),
                    reinterpret_cast<const char*>(sqlite3_column_text(st, 1)),
                    reinterpret_cast<const char*>(sqlite3_column_text(st, 2)), sqlite3_column_int64(st, 3),
                    sqlite3_column_int64(st, 4)});
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return rows;
}

TEST(Ingest, SiteFolderToLabelledSplitCacheWithNothingIdentifyingLeft) {
  const std::string root = ::testing::TempDir() + "/ingest_site";
  fs::remove_all(root);
  SynthOptions synth;
  synth.site = "HOSPC";
  synth.patients = 12;
  synth.image_size = 256;
  synth.style.compression = "rle";
  auto written = WriteSyntheticSite(synth, root + "/pacs");
  ASSERT_TRUE(written.ok()) << written.status();
  // Files ingest must refuse, each for its reason.
  std::ofstream(root + "/pacs/notes.txt") << "not a DICOM file";
  SynthOptions small = synth;
  small.site = "SMALL";
  small.patients = 1;
  small.max_studies_per_patient = 1;
  small.image_size = 64;
  ASSERT_TRUE(WriteSyntheticSite(small, root + "/pacs/small").ok());
  fs::remove(root + "/pacs/small/labels.csv");

  IngestOptions o;
  o.workspace = root + "/workspace";
  o.image_size = 128;
  o.threads = 2;
  o.labels_path = written->labels_csv;
  o.labels.findings = SynthFindings();
  o.split_seed = 9;
  int last_progress = 0;
  auto s = IngestDirectory(root + "/pacs", o, [&](int done, int) { last_progress = done; });
  ASSERT_TRUE(s.ok()) << s.status();
  const int images = written->images;
  // labels.csv itself is a file in the folder: unreadable as DICOM.
  EXPECT_EQ(s->scanned, images + 3);
  EXPECT_EQ(last_progress, s->scanned);
  EXPECT_EQ(s->ingested, images);
  EXPECT_EQ(s->quarantined, 3);
  EXPECT_EQ(s->quarantine_reasons["unreadable"], 2);
  EXPECT_EQ(s->quarantine_reasons["too_small"], 1);

  // Idempotent: a second run does nothing new.
  auto again = IngestDirectory(root + "/pacs", o);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->already_done, s->scanned);
  EXPECT_EQ(again->ingested, 0);

  // Patient-level split; labels joined; pixels where the index says.
  const auto rows = Images(o.workspace);
  ASSERT_EQ(rows.size(), static_cast<size_t>(images));
  std::map<std::string, std::set<std::string>> splits;
  for (const Row& r : rows) {
    splits[r.patient].insert(r.split);
    EXPECT_EQ(r.labels.front(), '[');
    EXPECT_EQ(r.labels.find("-1"), std::string::npos);  // VinDr labels are all known
  }
  EXPECT_EQ(splits.size(), 12u);
  for (const auto& [patient, set] : splits) EXPECT_EQ(set.size(), 1u) << patient;
  const auto shard = ReadFileBytes(o.workspace + "/cache/shard-00000.u8");
  ASSERT_TRUE(shard.ok());
  EXPECT_EQ(shard->size(), static_cast<size_t>(images) * 128 * 128);
  const unsigned char centre = static_cast<unsigned char>((*shard)[rows[0].offset + 64 * 128 + 64]);
  EXPECT_GT(centre, 20);  // the body, not the black background

  // Nothing identifying anywhere in the workspace: index, WAL, cache, copies.
  int scanned_files = 0;
  for (const auto& e : fs::recursive_directory_iterator(o.workspace)) {
    if (!e.is_regular_file() || e.path().filename() == "site.key") continue;
    auto bytes = ReadFileBytes(e.path().string());
    ASSERT_TRUE(bytes.ok());
    ++scanned_files;
    for (const std::string& phi : PlantedPhi("HOSPC")) {
      EXPECT_EQ(bytes->find(phi), std::string::npos) << e.path() << " holds " << phi;
    }
  }
  EXPECT_GE(scanned_files, images + 2);
  struct stat st {};
  ASSERT_EQ(stat((o.workspace + "/site.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// Compressed sources keep their transfer syntax in the de-identified copies.
TEST(Ingest, JpegLsAndRleSourcesAreIngested) {
  for (const char* compression : {"jpegls", "rle"}) {
    const std::string root = ::testing::TempDir() + "/ingest_" + compression;
    fs::remove_all(root);
    SynthOptions synth;
    synth.site = "HOSPD";
    synth.patients = 2;
    synth.max_studies_per_patient = 1;
    synth.image_size = 256;
    synth.style.compression = compression;
    synth.style.bits_stored = 16;
    ASSERT_TRUE(WriteSyntheticSite(synth, root + "/pacs").ok());
    fs::remove(root + "/pacs/labels.csv");
    IngestOptions o;
    o.workspace = root + "/ws";
    o.image_size = 64;
    auto s = IngestDirectory(root + "/pacs", o);
    ASSERT_TRUE(s.ok()) << compression << ": " << s.status();
    EXPECT_EQ(s->ingested, 2) << compression;
    EXPECT_EQ(s->quarantined, 0) << compression;
    int copies = 0;
    for (const auto& e : fs::directory_iterator(o.workspace + "/deid")) copies += e.path().extension() == ".dcm";
    EXPECT_EQ(copies, 2);
  }
}

// An unlabelled image is quarantined; once its labels arrive, a retry ingests
// it and clears the quarantine record, while a plain re-run leaves it alone.
TEST(Ingest, QuarantinedFilesAreRetriedOnRequest) {
  const std::string root = ::testing::TempDir() + "/ingest_retry";
  fs::remove_all(root);
  SynthOptions synth;
  synth.site = "RETRY";
  synth.patients = 3;
  synth.max_studies_per_patient = 1;
  synth.image_size = 256;
  auto written = WriteSyntheticSite(synth, root + "/pacs");
  ASSERT_TRUE(written.ok()) << written.status();
  auto full = ReadFileBytes(written->labels_csv);
  ASSERT_TRUE(full.ok());
  fs::rename(written->labels_csv, root + "/labels-full.csv");
  // Drop the rows of the first image.
  const std::string first = fs::path(written->files.front()).stem().string();
  std::string partial;
  for (const auto& line : absl::StrSplit(*full, '\n')) {
    if (!line.empty() && !absl::StartsWith(line, first + ",")) absl::StrAppend(&partial, line, "\n");
  }
  std::ofstream(root + "/labels-partial.csv") << partial;

  IngestOptions o;
  o.workspace = root + "/ws";
  o.image_size = 64;
  o.labels.findings = SynthFindings();
  o.labels_path = root + "/labels-partial.csv";
  auto s = IngestDirectory(root + "/pacs", o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->ingested, written->images - 1);
  EXPECT_EQ(s->quarantine_reasons["unlabelled"], 1);

  o.labels_path = root + "/labels-full.csv";
  auto plain = IngestDirectory(root + "/pacs", o);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->ingested, 0);
  EXPECT_EQ(plain->already_done, written->images);

  o.retry_quarantined = true;
  auto retried = IngestDirectory(root + "/pacs", o);
  ASSERT_TRUE(retried.ok()) << retried.status();
  EXPECT_EQ(retried->ingested, 1);
  EXPECT_EQ(retried->already_done, written->images - 1);
  EXPECT_EQ(Images(o.workspace).size(), static_cast<size_t>(written->images));
  sqlite3* db = nullptr;
  sqlite3_open((o.workspace + "/index.sqlite").c_str(), &db);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM quarantine", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(st, 0), 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

// A file above max_file_bytes is never read into memory: it is hashed from
// disk, quarantined as too_large and recorded, so a re-run skips it.
TEST(Ingest, AFileAboveTheMaximumSizeIsQuarantinedUnread) {
  const std::string root = ::testing::TempDir() + "/ingest_too_large";
  fs::remove_all(root);
  SynthOptions synth;
  synth.site = "LARGE";
  synth.patients = 2;
  synth.max_studies_per_patient = 1;
  synth.image_size = 256;
  auto written = WriteSyntheticSite(synth, root + "/pacs");
  ASSERT_TRUE(written.ok()) << written.status();
  uintmax_t largest = 0;
  for (const auto& f : written->files) largest = std::max(largest, fs::file_size(f));
  // Grow one file past the others (trailing bytes after the dataset are
  // harmless to the size check, which runs before any parsing).
  {
    std::ofstream grow(written->files.front(), std::ios::app | std::ios::binary);
    grow << std::string(static_cast<size_t>(largest) + 4096, '\0');
  }
  IngestOptions o;
  o.workspace = root + "/ws";
  o.image_size = 64;
  o.labels.findings = SynthFindings();
  o.labels_path = written->labels_csv;
  o.filters.max_file_bytes = static_cast<int64_t>(largest) + 1024;
  auto s = IngestDirectory(root + "/pacs", o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->quarantine_reasons["too_large"], 1);
  EXPECT_EQ(s->ingested, written->images - 1);
  sqlite3* db = nullptr;
  sqlite3_open((o.workspace + "/index.sqlite").c_str(), &db);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "SELECT reason, detail FROM quarantine WHERE reason = 'too_large'", -1, &st, nullptr);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "too_large");
  EXPECT_TRUE(absl::StrContains(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)), "above the maximum"));
  sqlite3_finalize(st);
  sqlite3_close(db);
  auto again = IngestDirectory(root + "/pacs", o);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->already_done, again->scanned);
}

// The pseudonym and split come from PatientID and the row from
// SOPInstanceUID: a file without either is quarantined with the reason, not
// given a shared pseudonym or another image's row.
TEST(Ingest, FilesWithoutPatientIdOrSopInstanceUidAreQuarantined) {
  const std::string root = ::testing::TempDir() + "/ingest_missing_ids";
  fs::remove_all(root);
  SynthOptions synth;
  synth.site = "IDS";
  synth.patients = 4;
  synth.image_size = 96;
  auto written = WriteSyntheticSite(synth, root + "/pacs");
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_GE(written->files.size(), 3u);
  fs::remove(written->labels_csv);
  const std::vector<std::pair<DcmTagKey, const char*>> removed = {{DCM_PatientID, ""}, {DCM_SOPInstanceUID, ""}};
  for (size_t i = 0; i < removed.size(); ++i) {
    DcmFileFormat file;
    ASSERT_TRUE(file.loadFile(written->files[i].c_str()).good());
    if (i == 0) {
      file.getDataset()->findAndDeleteElement(removed[i].first);  // absent
    } else {
      ASSERT_TRUE(file.getDataset()->putAndInsertString(removed[i].first, "").good());  // present, empty
    }
    ASSERT_TRUE(file.saveFile(written->files[i].c_str(), EXS_LittleEndianExplicit).good());
  }
  IngestOptions o;
  o.workspace = root + "/ws";
  o.image_size = 32;
  o.filters.min_rows = o.filters.min_columns = 64;
  auto s = IngestDirectory(root + "/pacs", o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->quarantine_reasons["missing_identifier"], 2) << s->quarantined;
  EXPECT_EQ(s->ingested, static_cast<int>(written->files.size()) - 2);
  fs::remove_all(root);
}

// A file meta group that names two transfer syntaxes (deflated first, so
// DCMTK would inflate, plain second) is not taken as "not deflated".
TEST(Ingest, TwoTransferSyntaxesInTheMetaGroupAreNotFollowed) {
  auto element = [](uint16_t number, const std::string& value) {
    std::string e = {'\x02', '\x00', static_cast<char>(number & 0xff), static_cast<char>(number >> 8), 'U', 'I',
                     static_cast<char>(value.size() & 0xff), static_cast<char>(value.size() >> 8)};
    return e + value;
  };
  const std::string head = std::string(128, '\0') + "DICM";
  const std::string deflated = element(0x0010, std::string(kDeflatedTransferSyntax));
  const std::string plain = element(0x0010, std::string("1.2.840.10008.1.2.1") + '\0');
  EXPECT_EQ(MeasureInflation(head + deflated + plain + "dataset", 1 << 20).kind, Inflation::kUnfollowable);
  EXPECT_EQ(MeasureInflation(head + plain + "dataset", 1 << 20).kind, Inflation::kNotDeflated);
  EXPECT_EQ(MeasureInflation(head + deflated + "dataset", 1 << 20).kind, Inflation::kMeasured);
}

// A deflated file is small on disk whatever it inflates to: one whose
// 16 x 16 header hides 32 MiB of pixel data is refused before DCMTK inflates
// it.
TEST(Ingest, ADeflatedFileThatInflatesBeyondTheMaximumIsRefusedUnread) {
  const std::string root = ::testing::TempDir() + "/ingest_deflate_bomb";
  fs::remove_all(root);
  fs::create_directories(root + "/pacs");
  DcmFileFormat file;
  DcmDataset& ds = *file.getDataset();
  ds.putAndInsertString(DCM_SOPClassUID, UID_DigitalXRayImageStorageForPresentation);
  ds.putAndInsertString(DCM_SOPInstanceUID, "1.2.3.4.5.6.7");
  ds.putAndInsertString(DCM_StudyInstanceUID, "1.2.3.4.5.6");
  ds.putAndInsertString(DCM_PatientID, "BOMB");
  ds.putAndInsertString(DCM_Modality, "DX");
  ds.putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
  ds.putAndInsertUint16(DCM_Rows, 16);
  ds.putAndInsertUint16(DCM_Columns, 16);
  ds.putAndInsertUint16(DCM_BitsAllocated, 8);
  ds.putAndInsertUint16(DCM_BitsStored, 8);
  ds.putAndInsertUint16(DCM_HighBit, 7);
  ds.putAndInsertUint16(DCM_SamplesPerPixel, 1);
  ds.putAndInsertUint16(DCM_PixelRepresentation, 0);
  const std::vector<Uint8> zeros(32u << 20, 0);
  ds.putAndInsertUint8Array(DCM_PixelData, zeros.data(), static_cast<unsigned long>(zeros.size()));
  const std::string path = root + "/pacs/bomb.dcm";
  ASSERT_TRUE(file.saveFile(path.c_str(), EXS_DeflatedLittleEndianExplicit).good());
  ASSERT_LT(fs::file_size(path), 1u << 20);  // small on disk

  IngestOptions o;
  o.workspace = root + "/ws";
  o.image_size = 16;
  o.filters.min_rows = o.filters.min_columns = 16;
  o.filters.max_decoded_bytes = int64_t{8} << 20;  // the dataset may inflate to twice that
  // The same file with its meta group's first element (0002,0001) written
  // as VR OL instead of OB (both have 4-byte lengths): still measured.
  {
    std::string bytes = *ReadFileBytes(path);
    const size_t at = bytes.find(std::string("\x02\x00\x01\x00OB", 6), 132);
    ASSERT_NE(at, std::string::npos);
    bytes[at + 5] = 'L';
    std::ofstream(root + "/pacs/bomb-ol.dcm", std::ios::binary) << bytes;
  }
  auto s = IngestDirectory(root + "/pacs", o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->quarantine_reasons["too_large"], 2) << s->quarantined;
  EXPECT_EQ(s->ingested, 0);
}

TEST(Ingest, ClearErrorsForBadSetups) {
  IngestOptions o;
  EXPECT_EQ(IngestDirectory("/nonexistent", o).status().code(), absl::StatusCode::kInvalidArgument);
  o.workspace = ::testing::TempDir() + "/ingest_bad";
  EXPECT_EQ(IngestDirectory("/nonexistent-source", o).status().code(), absl::StatusCode::kNotFound);
  o.labels_path = "/nonexistent/labels.csv";
  EXPECT_EQ(IngestDirectory(::testing::TempDir(), o).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fedtune::ingest
