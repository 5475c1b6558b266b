// report.html in a real browser: Debian's Chromium, headless. The page must
// run its script to the end without errors, show every site's name, and
// render to a screenshot and a PDF.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/core/file_io.h"
#include "coordinator/report/report.h"
#include "tests/testing/report_fixture.h"
#include "tests/testing/run_command.h"

namespace fedtune::report {
namespace {

namespace fs = std::filesystem;

std::string Chromium() {
  for (const char* b : {"chromium", "chromium-browser"}) {
    std::string out;
    if (testing::RunCommand(std::string("command -v ") + b, &out) == 0 && !out.empty()) {
      return out.substr(0, out.find('\n'));
    }
  }
  return "";
}

// Console errors Chromium logged while loading the page.
std::vector<std::string> ConsoleErrors(const std::string& output) {
  std::vector<std::string> errors;
  std::istringstream in(output);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(":CONSOLE") != std::string::npos &&
        (line.find("Uncaught") != std::string::npos || line.find("Error") != std::string::npos)) {
      errors.push_back(line);
    }
  }
  return errors;
}

class ReportBrowser : public ::testing::Test {
 protected:
  void SetUp() override {
    chromium_ = Chromium();
    if (chromium_.empty()) GTEST_SKIP() << "chromium is not installed (deploy/install-deps.sh installs it)";
    dir_ = ::testing::TempDir() + "/report_browser_" + std::to_string(getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure() && !dir_.empty()) fs::remove_all(dir_);
  }
  std::string Run(const std::string& args, const std::string& page) {
    std::string out;
    testing::RunCommand("timeout 120 '" + chromium_ + "' --headless --no-sandbox --disable-gpu "
                        "--enable-logging=stderr --v=0 --user-data-dir=" + dir_ + "/profile " + args + " 'file://" +
                        page + "'",
                        &out);
    return out;
  }
  std::string chromium_, dir_;
};

TEST_F(ReportBrowser, RendersWithoutScriptErrorsAndShowsEverySite) {
  auto report = BuildReport(testing::FinishedJob(std::string(64, 'c')), testing::ReportSites());
  ASSERT_TRUE(report.ok()) << report.status();
  const std::string page = dir_ + "/report.html";
  ASSERT_TRUE(WriteFileAtomically(page, RenderHtml(*report)).ok());

  const std::string dom = Run("--dump-dom", page);
  EXPECT_EQ(ConsoleErrors(dom), std::vector<std::string>{});
  EXPECT_NE(dom.find("data-report-ready=\"1\""), std::string::npos) << "the page script did not run to the end";
  for (const char* shown : {"hospital-a", "hospital-b", "St. &lt;Mary's&gt; &amp; Co"}) {
    EXPECT_NE(dom.find(shown), std::string::npos) << shown;
  }

  const std::string png = dir_ + "/report.png";
  Run("--window-size=1200,3000 --screenshot=" + png, page);
  auto bytes = ReadFileBytes(png);
  ASSERT_TRUE(bytes.ok()) << "no screenshot";
  EXPECT_EQ(bytes->substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_GT(bytes->size(), 20000u);

  const std::string pdf = dir_ + "/report.pdf";
  Run("--no-pdf-header-footer --print-to-pdf=" + pdf, page);
  auto pdf_bytes = ReadFileBytes(pdf);
  ASSERT_TRUE(pdf_bytes.ok()) << "no PDF";
  EXPECT_EQ(pdf_bytes->substr(0, 5), "%PDF-");
}

// The error check above is not vacuous: a page with a failing script is caught.
TEST_F(ReportBrowser, ScriptErrorsAreDetected) {
  const std::string page = dir_ + "/broken.html";
  ASSERT_TRUE(WriteFileAtomically(page, "<!doctype html><p>x</p><script>notDefined();</script>").ok());
  EXPECT_EQ(ConsoleErrors(Run("--dump-dom", page)).size(), 1u);
}

}  // namespace
}  // namespace fedtune::report
