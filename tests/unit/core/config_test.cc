#include "common/core/config.h"

#include <gtest/gtest.h>

#include "common/core/file_io.h"

namespace fedtune {
namespace {

constexpr char kSite[] = R"(site_id = "hospital-a"
threads = 8

[train]
batch_size = "32"
epochs = 3
learning_rate = 1
findings = ["Cardiomegaly", "Pleural effusion"]
bad_list = ["ok", 3]
)";

Config Load() {
  auto c = Config::Parse(kSite, "site.toml");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

TEST(Config, ReadsTypedValuesAndDottedKeys) {
  Config c = Load();
  EXPECT_EQ(*c.GetString("site_id"), "hospital-a");
  EXPECT_EQ(*c.GetInt("threads"), 8);
  EXPECT_EQ(*c.GetInt("train.epochs"), 3);
  EXPECT_EQ(*c.GetDouble("train.learning_rate"), 1.0);  // an integer is a valid number
  EXPECT_EQ(*c.GetStringList("train.findings"),
            (std::vector<std::string>{"Cardiomegaly", "Pleural effusion"}));
  auto train = c.GetTable("train");
  ASSERT_TRUE(train.ok());
  EXPECT_EQ(*train->GetInt("epochs"), 3);
  EXPECT_EQ(train->path(), "train");
}

TEST(Config, WrongTypeNamesFileLineColumnKeyExpectedAndGot) {
  Config c = Load();
  auto s = c.GetInt("train.batch_size").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "site.toml:5:14: key 'train.batch_size': expected an integer, got a string");
  // From a sub-table the full key is still named.
  auto sub = c.GetTable("train")->GetBool("epochs").status();
  EXPECT_EQ(sub.message(), "site.toml:6:10: key 'train.epochs': expected a boolean, got an integer");
}

TEST(Config, DefaultsApplyOnlyWhenMissing) {
  Config c = Load();
  EXPECT_EQ(*c.GetInt("train.warmup_steps", 100), 100);
  EXPECT_EQ(*c.GetString("log_level", "info"), "info");
  // Present with the wrong type is an error even though a default exists.
  EXPECT_FALSE(c.GetInt("train.batch_size", 16).ok());
  auto empty = c.GetTableOrEmpty("dicom");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty->GetInt("port", 11112), 11112);
  EXPECT_EQ(empty->GetInt("port").status().message(),
            "site.toml: missing required key 'dicom.port' (an integer)");
}

TEST(Config, MissingRequiredKey) {
  auto s = Load().GetString("coordinator.address").status();
  EXPECT_EQ(s.message(), "site.toml: missing required key 'coordinator.address' (a string)");
}

TEST(Config, ListItemsAreChecked) {
  auto s = Load().GetStringList("train.bad_list").status();
  EXPECT_EQ(s.message(), "site.toml:9:19: key 'train.bad_list[1]': expected a string, got an integer");
}

TEST(Config, RangeChecks) {
  Config c = Load();
  EXPECT_EQ(*c.GetIntInRange("threads", 1, 64, 1), 8);
  EXPECT_EQ(c.GetIntInRange("threads", 1, 4, 1).status().message(),
            "site.toml:2:11: key 'threads': 8 is out of range [1, 4]");
}

TEST(Config, UnknownKeysAreReported) {
  auto c = Config::Parse("epochs = 1\nbatchsize = 2\n", "job.toml");
  ASSERT_TRUE(c.ok());
  auto s = c->RejectUnknownKeys({"epochs", "batch_size"});
  EXPECT_EQ(s.message(), "job.toml:2:13: unknown key 'batchsize' (known keys here: epochs, batch_size)");
  EXPECT_TRUE(c->RejectUnknownKeys({"epochs", "batchsize"}).ok());
}

TEST(Config, SyntaxErrorsNameLineAndColumn) {
  auto c = Config::Parse("a = 1\nb = = 2\n", "bad.toml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c.status().message().rfind("bad.toml:2:", 0), 0u) << c.status().message();
}

TEST(Config, LoadFile) {
  const std::string path = ::testing::TempDir() + "/cfg_test.toml";
  ASSERT_TRUE(WriteFileAtomically(path, "x = 5\n").ok());
  auto c = Config::LoadFile(path);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c->GetInt("x"), 5);
  EXPECT_EQ(c->source(), path);
  EXPECT_EQ(Config::LoadFile(path + ".absent").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fedtune
