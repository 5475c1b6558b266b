#include "common/core/logging.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <cstdlib>
#include <sstream>
#include <type_traits>

#include "common/core/file_io.h"

namespace fedtune {
namespace {

// A Phi value has no path to text other than its redacted form.
static_assert(!std::is_convertible_v<Phi<std::string>, std::string>);
static_assert(!std::is_convertible_v<Phi<std::string>, std::string_view>);
static_assert(!std::is_convertible_v<Phi<std::string>, const char*>);

TEST(Phi, FormatsRedacted) {
  Phi<std::string> name("DOE^JANE");
  EXPECT_EQ(fmt::format("patient {}", name), "patient [PHI]");
  std::ostringstream os;
  os << name;
  EXPECT_EQ(os.str(), "[PHI]");
  EXPECT_EQ(name.reveal(), "DOE^JANE");
}

TEST(Phi, NeverReachesALogLine) {
  std::ostringstream captured;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(captured);
  spdlog::logger logger("test", sink);
  Phi<std::string> id("MRN-0012345");
  logger.info("ingesting study of patient {} ({})", id, Phi<int>(1961));
  logger.flush();
  EXPECT_EQ(captured.str().find("MRN-0012345"), std::string::npos);
  EXPECT_EQ(captured.str().find("1961"), std::string::npos);
  EXPECT_NE(captured.str().find("patient [PHI] ([PHI])"), std::string::npos);
}

TEST(Logging, ParseLevel) {
  EXPECT_EQ(*ParseLogLevel("WARN"), spdlog::level::warn);
  EXPECT_EQ(*ParseLogLevel("debug"), spdlog::level::debug);
  auto bad = ParseLogLevel("verbose");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("trace, debug, info"), std::string::npos);
}

TEST(Logging, InitWritesToFileAndHonoursEnvironmentLevel) {
  const std::string path = ::testing::TempDir() + "/fedtune_log_test.log";
  std::remove(path.c_str());
  setenv("FEDTUNE_LOG_LEVEL", "warn", 1);
  ASSERT_TRUE(InitLogging({.level = "debug", .file = path, .component = "site"}).ok());
  spdlog::info("hidden by the environment's level");
  spdlog::warn("round {} refused", 3);
  spdlog::default_logger()->flush();
  unsetenv("FEDTUNE_LOG_LEVEL");
  auto text = ReadFileBytes(path);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text->find("[site] round 3 refused"), std::string::npos) << *text;
  EXPECT_EQ(text->find("hidden"), std::string::npos);
  EXPECT_FALSE(InitLogging({.level = "loud", .file = "", .component = "x"}).ok());
  EXPECT_EQ(InitLogging({.level = "info", .file = "/dev/null/x.log", .component = "x"}).code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace fedtune
