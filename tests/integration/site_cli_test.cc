// fedtune-site as an operator runs it: synth -> ingest -> stats, exit codes.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "fedtune/v1/common.pb.h"

#include "tests/testing/run_command.h"

namespace {

struct CliRun {
  int code;
  std::string out;
};

CliRun Exec(const std::string& args) {
  CliRun r;
  r.code = fedtune::testing::RunCommand(std::string(FEDTUNE_SITE_BIN) + " " + args, &r.out);
  return r;
}

TEST(SiteCli, SynthIngestStats) {
  const std::string dir = ::testing::TempDir() + "/site_cli";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/site.toml") << "[site]\nid = \"hospital-b\"\nworkspace = \"" << dir << "/ws\"\n"
                                    << "[ingest]\nimage_size = 128\n[labels]\nfindings = [\"Cardiomegaly\", "
                                       "\"Pleural effusion\", \"Nodule/Mass\", \"Pneumothorax\"]\n[stats]\nk = 3\n";
  CliRun synth = Exec("synth --out " + dir + "/pacs --site hospital-b --patients 15 --size 256 --style cr --json");
  ASSERT_EQ(synth.code, 0) << synth.out;
  const int images = nlohmann::json::parse(synth.out)["images"].get<int>();
  CliRun ingest = Exec("ingest --config " + dir + "/site.toml --source " + dir + "/pacs --labels " + dir +
                    "/pacs/labels.csv --json");
  ASSERT_EQ(ingest.code, 0) << ingest.out;
  auto summary = nlohmann::json::parse(ingest.out);
  EXPECT_EQ(summary["ingested"].get<int>(), images);
  EXPECT_EQ(summary["quarantine_reasons"]["unreadable"].get<int>(), 1);  // labels.csv itself
  CliRun stats = Exec("stats --config " + dir + "/site.toml --json");
  ASSERT_EQ(stats.code, 0) << stats.out;
  auto s = nlohmann::json::parse(stats.out);
  int total = 0;
  for (const auto& [name, split] : s["splits"].items()) total += split["images"].get<int>();
  EXPECT_EQ(total, images);
  // The command's options may also come first, as with fedtune.
  CliRun first = Exec("--config " + dir + "/site.toml --json stats");
  EXPECT_EQ(first.code, 0) << first.out;
  EXPECT_EQ(first.out, stats.out);
  CliRun shareable = Exec("stats --config " + dir + "/site.toml --shareable --json");
  ASSERT_EQ(shareable.code, 0);
  const auto shared = nlohmann::json::parse(shareable.out);  // must outlive the loop over its items
  for (const auto& [name, split] : shared["splits"].items()) {
    for (const auto& p : split["positives"]) EXPECT_TRUE(p.is_null() || p == 0 || p >= 3) << p;  // null: below k
    for (const auto& n : split["negatives"]) EXPECT_TRUE(n.is_null() || n == 0 || n >= 3) << n;
  }
  // Pretraining a backbone on a workspace is a site command.
  CliRun pretrain_help = Exec("backbone pretrain --help");
  EXPECT_EQ(pretrain_help.code, 0);
  EXPECT_NE(pretrain_help.out.find("fedtune-site backbone pretrain --workspace"), std::string::npos) << pretrain_help.out;
  // It says how the site protects what it shares.
  EXPECT_EQ(shared["protection"]["k"], 3);
  EXPECT_GE(shared["protection"]["min_train_images"].get<int>(), 3);
  EXPECT_TRUE(shared["protection"].contains("max_evaluations_per_job"));
  EXPECT_FALSE(s.contains("protection"));
  // What the daemon sent last holds counts that moved by less than k:
  // --shareable shows them as sent, as the coordinator sees them.
  fedtune::v1::DatasetSummary last;
  last.set_k_threshold(3);
  for (const auto& [name, split] : shared["splits"].items()) {
    auto* sp = last.add_splits();
    sp->set_split(name);
    sp->set_images(split["images"].is_null() ? -1 : split["images"].get<int64_t>() - (name == "train" ? 2 : 0));
    sp->set_patients(split["patients"].is_null() ? -1 : split["patients"].get<int64_t>());
  }
  std::ofstream(dir + "/ws/shared_summary.pb", std::ios::binary) << last.SerializeAsString();
  CliRun held = Exec("stats --config " + dir + "/site.toml --shareable --json");
  ASSERT_EQ(held.code, 0) << held.out;
  const auto held_json = nlohmann::json::parse(held.out);
  EXPECT_EQ(held_json["splits"]["train"]["images"].get<int64_t>(),
            shared["splits"]["train"]["images"].get<int64_t>() - 2);
}

// Ingest without labels warns; `labels import` labels the images afterwards
// and says what matched; the split is pinned and re-split only on purpose.
TEST(SiteCli, LabelsImportAndThePinnedSplit) {
  const std::string dir = ::testing::TempDir() + "/site_cli_labels";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string config = dir + "/site.toml";
  auto write_config = [&](int seed) {
    std::ofstream(config) << "[site]\nid = \"hospital-l\"\nworkspace = \"" << dir << "/ws\"\n"
                          << "[ingest]\nimage_size = 64\nmin_rows = 64\nmin_columns = 64\n[labels]\nfindings = "
                             "[\"Cardiomegaly\", \"Pleural effusion\", \"Nodule/Mass\", \"Pneumothorax\"]\n"
                          << "[split]\nseed = " << seed << "\n";
  };
  write_config(1);
  ASSERT_EQ(Exec("synth --out " + dir + "/pacs --site hospital-l --patients 6 --size 128").code, 0);
  std::filesystem::rename(dir + "/pacs/labels.csv", dir + "/labels.csv");
  CliRun bare = Exec("ingest --config " + config + " --source " + dir + "/pacs --json");
  ASSERT_EQ(bare.code, 0) << bare.out;
  EXPECT_NE(bare.out.find("stored without labels"), std::string::npos) << bare.out;
  EXPECT_NE(bare.out.find("fedtune-site labels import"), std::string::npos) << bare.out;
  CliRun imported = Exec("labels import --config " + config + " --labels " + dir + "/labels.csv --json");
  ASSERT_EQ(imported.code, 0) << imported.out;
  const auto summary = nlohmann::json::parse(imported.out);
  EXPECT_GT(summary["matched"].get<int>(), 0);
  EXPECT_EQ(summary["matched"], summary["changed"]);
  EXPECT_EQ(summary["not_matched"].get<int>(), 0);
  CliRun again = Exec("labels import --config " + config + " --labels " + dir + "/labels.csv");
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_NE(again.out.find("0 changed"), std::string::npos) << again.out;
  CliRun stats = Exec("stats --config " + config);
  EXPECT_NE(stats.out.find("split: seed=1"), std::string::npos) << stats.out;
  EXPECT_NE(stats.out.find(" negative"), std::string::npos) << stats.out;
  // Another [split]: ingest refuses; `split --resplit` is the way.
  write_config(2);
  CliRun refused = Exec("ingest --config " + config + " --source " + dir + "/pacs");
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.out.find("fedtune-site split --config site.toml --resplit"), std::string::npos) << refused.out;
  EXPECT_EQ(Exec("split --config " + config).code, 1);
  CliRun resplit = Exec("split --config " + config + " --resplit --json");
  ASSERT_EQ(resplit.code, 0) << resplit.out;
  EXPECT_EQ(nlohmann::json::parse(resplit.out)["patients"].get<int>(), 6);
  EXPECT_EQ(Exec("split --config " + config).code, 0);
  EXPECT_EQ(Exec("ingest --config " + config + " --source " + dir + "/pacs").code, 0);
}

// The documented example configuration stays valid.
TEST(SiteCli, ExampleConfigLoads) {
  CliRun r = Exec(std::string("stats --config ") + FEDTUNE_SOURCE_DIR + "/deploy/examples/site.toml");
  EXPECT_NE(r.out.find("no index in workspace"), std::string::npos) << r.out;  // parsed; just nothing ingested
}

TEST(SiteCli, UsageAndConfigErrors) {
  EXPECT_EQ(Exec("--help").code, 0);
  CliRun missing = Exec("ingest --config /etc/hostname");
  EXPECT_EQ(missing.code, 2);
  EXPECT_NE(missing.out.find("--source is required"), std::string::npos) << missing.out;
  const std::string bad = ::testing::TempDir() + "/bad_site.toml";
  std::ofstream(bad) << "[site]\nid = 7\nworkspace = \"/tmp\"\n";
  CliRun r = Exec("stats --config " + bad);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("bad_site.toml:2:6: key 'site.id': expected a string, got an integer"), std::string::npos)
      << r.out;
  // A coordinator address without a port would be dialled on 443.
  std::ofstream(bad) << "[site]\nid = \"h\"\nworkspace = \"/tmp\"\n[coordinator]\naddress = \"localhost\"\n";
  r = Exec("stats --config " + bad);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("[coordinator] address: coordinator address \"localhost\" has no port"), std::string::npos)
      << r.out;
}

}  // namespace
