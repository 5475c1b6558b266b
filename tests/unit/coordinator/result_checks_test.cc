// What a site reports besides weights must add up before it is recorded.
#include "coordinator/engine/result_checks.h"

#include <gtest/gtest.h>

namespace fedtune::coordinator {
namespace {

JobSpec Spec() {
  JobSpec s;
  s.train.add_findings("Cardiomegaly");
  s.train.add_findings("Pleural effusion");
  return s;
}

v1::DatasetSummary Declared(int64_t test_images) {
  v1::DatasetSummary d;
  d.set_k_threshold(5);
  auto* sp = d.add_splits();
  sp->set_split("test");
  sp->set_images(test_images);
  return d;
}

// A consistent result: 30 cases, 10 positive, confusion matrix and
// histograms that add up.
v1::EvaluationMetrics Good() {
  v1::EvaluationMetrics m;
  m.set_split("test");
  m.set_examples(30);
  m.set_macro_auroc(0.8);
  auto* f = m.add_findings();
  f->set_finding("Cardiomegaly");
  f->set_positives(10);
  f->set_negatives(20);
  f->set_tp(7);
  f->set_fn(3);
  f->set_fp(4);
  f->set_tn(16);
  f->set_auroc(0.8);
  f->set_mcc(-0.2);
  for (int i = 0; i < 4; ++i) {
    f->add_logit_hist_pos(i < 2 ? 5 : 0);
    f->add_logit_hist_neg(i < 2 ? 0 : 10);
  }
  f->add_roc_fpr(0.f);
  f->add_roc_tpr(0.f);
  f->add_roc_fpr(1.f);
  f->add_roc_tpr(1.f);
  return m;
}

TEST(CheckEvaluation, AConsistentResultAndAnEmptyOnePass) {
  EXPECT_TRUE(CheckEvaluation(Good(), Spec(), Declared(30), "test").ok());
  EXPECT_TRUE(CheckEvaluation(v1::EvaluationMetrics(), Spec(), Declared(30), "test").ok());
}

TEST(CheckEvaluation, EachInconsistencyIsRefusedWithWhatIsWrong) {
  struct Case {
    std::string name, expect;
    std::function<void(v1::EvaluationMetrics&)> spoil;
    int64_t declared = 30;
  };
  const std::vector<Case> cases = {
      {"more examples than declared", "declared 29 test images", [](auto&) {}, 29},
      {"unknown finding", "not one of the job's findings",
       [](auto& m) { m.mutable_findings(0)->set_finding("Fracture"); }},
      {"finding twice", "reported twice", [](auto& m) { *m.add_findings() = m.findings(0); }},
      {"negative count", "negative count", [](auto& m) { m.mutable_findings(0)->set_fp(-1); }},
      {"classes exceed examples", "exceed the 30 examples", [](auto& m) { m.mutable_findings(0)->set_negatives(21); }},
      {"confusion matrix", "confusion matrix", [](auto& m) { m.mutable_findings(0)->set_tp(8); }},
      {"histogram total", "histograms do not add up", [](auto& m) { m.mutable_findings(0)->set_logit_hist_pos(0, 6); }},
      {"histogram lengths", "unequal", [](auto& m) { m.mutable_findings(0)->add_logit_hist_pos(0); }},
      {"AUROC above 1", "outside [0, 1]", [](auto& m) { m.mutable_findings(0)->set_auroc(1.5); }},
      {"NaN sensitivity", "outside [0, 1]",
       [](auto& m) { m.mutable_findings(0)->set_sensitivity(std::numeric_limits<double>::quiet_NaN()); }},
      {"MCC below -1", "MCC", [](auto& m) { m.mutable_findings(0)->set_mcc(-1.5); }},
      {"ROC point", "ROC point", [](auto& m) { m.mutable_findings(0)->set_roc_tpr(1, 2.f); }},
      {"macro AUROC", "macro AUROC", [](auto& m) { m.set_macro_auroc(-0.1); }},
  };
  for (const Case& c : cases) {
    v1::EvaluationMetrics m = Good();
    c.spoil(m);
    absl::Status st = CheckEvaluation(m, Spec(), Declared(c.declared), "test");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(std::string(st.message()).find(c.expect), std::string::npos) << c.name << ": " << st;
  }
}

TEST(CapText, CutsLongTextAtACharacterAndNeutralisesControlCharacters) {
  EXPECT_EQ(CapText("short", 10), "short");
  const std::string cut = CapText(std::string(100, 'a'), 10);
  EXPECT_EQ(cut, "aaaaaaaaaa [90 more bytes cut]");
  EXPECT_EQ(CapText("a\nb\rc\td", 100), "a b c\td");
  // "é" is two bytes: cutting after the first would leave half a character.
  const std::string utf8 = CapText("ab\xc3\xa9" "cd", 3);
  EXPECT_EQ(utf8.substr(0, utf8.find(' ')), "ab");
}

}  // namespace
}  // namespace fedtune::coordinator
