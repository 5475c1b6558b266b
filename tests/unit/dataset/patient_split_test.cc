#include "site-agent/dataset/patient_split.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "absl/strings/str_cat.h"

namespace fedtune::dataset {
namespace {

TEST(PatientSplit, RatiosAreRespectedAndStable) {
  const SplitRatios r{0.7, 0.1, 0.2};
  ASSERT_TRUE(Validate(r).ok());
  std::map<Split, int> counts;
  for (int i = 0; i < 20000; ++i) counts[AssignSplit(absl::StrCat("P", i), 42, r)]++;
  EXPECT_NEAR(counts[Split::kTrain] / 20000.0, 0.7, 0.015);
  EXPECT_NEAR(counts[Split::kVal] / 20000.0, 0.1, 0.015);
  EXPECT_NEAR(counts[Split::kTest] / 20000.0, 0.2, 0.015);
  EXPECT_EQ(AssignSplit("P123", 42, r), AssignSplit("P123", 42, r));
  int moved = 0;
  for (int i = 0; i < 1000; ++i) moved += AssignSplit(absl::StrCat("P", i), 42, r) != AssignSplit(absl::StrCat("P", i), 43, r);
  EXPECT_GT(moved, 300);  // another seed is another split
  EXPECT_FALSE(Validate({0.5, 0.1, 0.2}).ok());
  EXPECT_FALSE(Validate({1.2, -0.1, -0.1}).ok());
}

TEST(PatientSplit, AddingPatientsNeverMovesExistingOnes) {
  const SplitRatios r;
  std::map<std::string, Split> before;
  for (int i = 0; i < 500; ++i) before[absl::StrCat("P", i)] = AssignSplit(absl::StrCat("P", i), 7, r);
  // "More data" is just more ids; each assignment depends on its own id only.
  for (int i = 0; i < 2000; ++i) {
    const std::string id = absl::StrCat("P", i);
    const Split s = AssignSplit(id, 7, r);
    if (i < 500) {
      EXPECT_EQ(s, before[id]);
    }
  }
}

std::vector<Candidate> Images(int n, int every_nth_positive) {
  std::vector<Candidate> c;
  for (int i = 0; i < n; ++i) c.push_back({absl::StrCat("IMG", i), i % every_nth_positive == 0});
  return c;
}

TEST(PatientSplit, SubsetsAreNested) {
  const auto images = Images(3000, 10);
  std::vector<std::string> prev;
  for (int cap : {100, 200, 400, 1000}) {
    auto s = NestedSubset(images, cap, 5);
    ASSERT_EQ(s.size(), static_cast<size_t>(cap));
    EXPECT_TRUE(std::equal(prev.begin(), prev.end(), s.begin())) << cap;
    prev = s;
  }
  EXPECT_EQ(NestedSubset(images, 0, 5).size(), 3000u);
  EXPECT_EQ(NestedSubset(images, 5000, 5).size(), 3000u);
}

TEST(PatientSplit, BalancedSubsetsAreNestedAndBalanced) {
  const auto images = Images(3000, 10);  // 10 % positive
  std::set<std::string> positives;
  for (const auto& c : images) {
    if (c.positive) positives.insert(c.image_id);
  }
  std::vector<std::string> prev;
  for (int cap : {100, 200, 400}) {
    auto s = NestedSubset(images, cap, 5, /*balance=*/1.0);
    int pos = 0;
    for (const auto& id : s) pos += positives.count(id);
    EXPECT_NEAR(pos, cap / 2, 1) << cap;  // 1:1
    EXPECT_TRUE(std::equal(prev.begin(), prev.end(), s.begin())) << cap;
    prev = s;
  }
  // More than the data allows: positives run out, negatives fill up.
  auto all = NestedSubset(images, 1000, 5, 1.0);
  int pos = 0;
  for (const auto& id : all) pos += positives.count(id);
  EXPECT_EQ(pos, 300);
  EXPECT_EQ(all.size(), 1000u);
}

}  // namespace
}  // namespace fedtune::dataset
