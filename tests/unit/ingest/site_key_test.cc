#include "site-agent/ingest/site_key.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "common/core/file_io.h"

namespace fedtune::ingest {
namespace {

TEST(SiteKey, CreatedOnceWith0600AndReusedAfterwards) {
  const std::string dir = ::testing::TempDir() + "/site_key_test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = dir + "/site.key";
  auto first = LoadOrCreateSiteKey(path);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->size(), kSiteKeyBytes);
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = LoadOrCreateSiteKey(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *first);
  auto other = LoadOrCreateSiteKey(dir + "/other.key");
  EXPECT_NE(*other, *first);
}

TEST(SiteKey, RefusesLooseModesAndWrongSizes) {
  const std::string dir = ::testing::TempDir() + "/site_key_test2";
  std::filesystem::create_directories(dir);
  const std::string loose = dir + "/loose.key";
  ASSERT_TRUE(WriteFileAtomically(loose, std::string(32, 'k'), 0644).ok());
  auto s = LoadOrCreateSiteKey(loose);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_NE(std::string(s.status().message()).find("chmod 600"), std::string::npos);
  EXPECT_EQ(std::string(s.status().message()).find("kkkk"), std::string::npos);
  const std::string short_key = dir + "/short.key";
  ASSERT_TRUE(WriteFileAtomically(short_key, "abc", 0600).ok());
  EXPECT_EQ(LoadOrCreateSiteKey(short_key).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace fedtune::ingest
