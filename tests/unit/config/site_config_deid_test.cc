// [deid] burned-in text settings in site.toml.
#include <gtest/gtest.h>

#include "site-agent/config/site_config.h"

namespace fedtune::site {
namespace {

constexpr char kHead[] = "[site]\nid = \"h\"\nworkspace = \"ws\"\n";

TEST(SiteConfigDeid, BurnedInTextIsQuarantinedByDefault) {
  auto c = ParseSiteConfig(kHead, "/etc/fedtune/site.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ingest.burned_in.mode, ingest::BurnedInMode::kQuarantine);
  EXPECT_EQ(c->ingest.burned_in.allowed_markers, ingest::DefaultAllowedMarkers());
  EXPECT_EQ(c->ingest.burned_in.min_confidence, 50);
  EXPECT_TRUE(c->ingest.burned_in.tessdata_dir.empty());
}

TEST(SiteConfigDeid, EverySettingIsReadAndBadValuesAreNamed) {
  auto c = ParseSiteConfig(std::string(kHead) +
                               "[deid]\nburned_in = \"redact\"\nburned_in_markers = [\"L\", \"R\", \"SIN\", \"DEX\"]\n"
                               "burned_in_min_confidence = 70\ntessdata_dir = \"tessdata\"\n",
                           "/etc/fedtune/site.toml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->ingest.burned_in.mode, ingest::BurnedInMode::kRedact);
  EXPECT_EQ(c->ingest.burned_in.allowed_markers, (std::vector<std::string>{"L", "R", "SIN", "DEX"}));
  EXPECT_EQ(c->ingest.burned_in.min_confidence, 70);
  EXPECT_EQ(c->ingest.burned_in.tessdata_dir, "/etc/fedtune/tessdata") << "relative to the file";

  auto bad = ParseSiteConfig(std::string(kHead) + "[deid]\nburned_in = \"blur\"\n", "/etc/fedtune/site.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("deid.burned_in"), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("\"redact\""), std::string::npos) << bad.status();
  EXPECT_FALSE(ParseSiteConfig(std::string(kHead) + "[deid]\nburned_in_min_confidence = 101\n", "/x/site.toml").ok());
  EXPECT_FALSE(ParseSiteConfig(std::string(kHead) + "[deid]\nburned_in_markers = \"L\"\n", "/x/site.toml").ok());
}

}  // namespace
}  // namespace fedtune::site
