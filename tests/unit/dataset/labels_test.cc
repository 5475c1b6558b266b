#include "site-agent/dataset/labels.h"

#include <gtest/gtest.h>

namespace fedtune::dataset {
namespace {

constexpr char kVinDr[] =
    "\xEF\xBB\xBFimage_id,rad_id,Cardiomegaly,Pleural effusion,No finding\r\n"
    "img1,R1,1,0,0\r\n"
    "img1,R2,0,0,1\r\n"
    "img1,R3,1,0,0\r\n"
    "img2,R1,0,1,0\r\n"
    "img2,R2,0,0,1\r\n"
    "img2,R3,0,0,1\r\n";

TEST(Labels, VinDrAnyAndMajority) {
  LabelOptions o;
  o.findings = {"Cardiomegaly", "Pleural effusion"};
  auto any = ParseLabels(kVinDr, o);
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ(any->by_key.at("img1"), (std::vector<float>{1, 0}));
  EXPECT_EQ(any->by_key.at("img2"), (std::vector<float>{0, 1}));
  o.aggregation = RaterAggregation::kMajority;
  auto maj = ParseLabels(kVinDr, o);
  ASSERT_TRUE(maj.ok());
  EXPECT_EQ(maj->by_key.at("img1"), (std::vector<float>{1, 0}));  // 2 of 3
  EXPECT_EQ(maj->by_key.at("img2"), (std::vector<float>{0, 0}));  // 1 of 3
}

TEST(Labels, WideLayoutWithUncertainPolicies) {
  const char* csv = "SOPInstanceUID,Edema,\"Lung Opacity\"\n1.2.3,1,-1\n\"1.2.4\",,0\n";
  LabelOptions o;
  o.layout = LabelLayout::kWide;
  o.key_column = "SOPInstanceUID";
  o.findings = {"Edema", "Lung Opacity"};
  auto t = ParseLabels(csv, o);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->by_key.at("1.2.3"), (std::vector<float>{1, -1}));
  EXPECT_EQ(t->by_key.at("1.2.4"), (std::vector<float>{-1, 0}));  // blank = not read
  o.uncertain = UncertainPolicy::kPositive;
  EXPECT_EQ(ParseLabels(csv, o)->by_key.at("1.2.3"), (std::vector<float>{1, 1}));
  o.uncertain = UncertainPolicy::kNegative;
  EXPECT_EQ(ParseLabels(csv, o)->by_key.at("1.2.3"), (std::vector<float>{1, 0}));
}

TEST(Labels, ErrorsNameLineAndColumnButNoKeyValues) {
  LabelOptions o;
  o.findings = {"Cardiomegaly"};
  auto bad = ParseLabels("image_id,rad_id,Cardiomegaly\nSECRET-ACC-1,R1,yes\n", o, "site.csv");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(), "site.csv:2: column \"Cardiomegaly\" must be 1, 0, -1 or blank");
  o.findings = {"Nodule"};
  EXPECT_EQ(ParseLabels(kVinDr, o, "site.csv").status().message(), "site.csv:1: no column for finding \"Nodule\"");
  o.findings = {"Cardiomegaly"};
  auto ragged = ParseLabels("image_id,rad_id,Cardiomegaly\nSECRET-2,R1\n", o, "site.csv");
  EXPECT_EQ(ragged.status().message(), "site.csv:2: 2 fields, the header has 3");
  EXPECT_EQ(std::string(ragged.status().message()).find("SECRET"), std::string::npos);
  o.layout = LabelLayout::kWide;
  o.findings = {"Cardiomegaly"};
  auto dup = ParseLabels("image_id,Cardiomegaly\nA,1\nA,0\n", o, "w.csv");
  EXPECT_EQ(dup.status().message(), "w.csv:3: key already given on an earlier row");
  EXPECT_FALSE(ParseCsv("a,\"unterminated\n").ok());
}

}  // namespace
}  // namespace fedtune::dataset
