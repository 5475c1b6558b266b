#include "common/core/file_io.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

namespace fedtune {
namespace {

std::string TempPath(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/file_io_test";
  std::filesystem::create_directories(dir);
  return dir + "/" + name;
}

TEST(WriteFileAtomically, WritesReplacesAndSetsMode) {
  const std::string path = TempPath("secret.key");
  ASSERT_TRUE(WriteFileAtomically(path, "first", 0600).ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second version", 0600).ok());
  EXPECT_EQ(*ReadFileBytes(path), "second version");
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // No temporary files are left behind.
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(path).parent_path())) {
    entries += e.path().filename().string().find(".tmp") != std::string::npos;
  }
  EXPECT_EQ(entries, 0);
}

TEST(WriteFileAtomically, MissingDirectoryIsNotFound) {
  auto s = WriteFileAtomically(TempPath("no/such/dir/file"), "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.message().find("no/such/dir"), std::string::npos);
}

TEST(ReadFileBytes, ErrorsNameThePath) {
  auto r = ReadFileBytes(TempPath("absent"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("absent"), std::string::npos);
  EXPECT_EQ(ReadFileBytes(::testing::TempDir()).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MappedFile, MapsContentAndEmptyFiles) {
  const std::string path = TempPath("mapped.bin");
  ASSERT_TRUE(WriteFileAtomically(path, std::string("\x01\x02\x03", 3)).ok());
  auto m = MappedFile::Open(path);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->bytes().size(), 3u);
  EXPECT_EQ(static_cast<int>(m->bytes()[2]), 3);
  MappedFile moved = *std::move(m);
  EXPECT_EQ(moved.bytes().size(), 3u);

  const std::string empty = TempPath("empty.bin");
  ASSERT_TRUE(WriteFileAtomically(empty, "").ok());
  auto e = MappedFile::Open(empty);
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->bytes().empty());
}

}  // namespace
}  // namespace fedtune
