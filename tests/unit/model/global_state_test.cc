// The global state a federation ships (checkpoint.h): every fine-tuning
// method starts from the sites' pretrained base weights, whatever the
// coordinator's version 0 holds, and updates carry what training changed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "common/core/safetensors.h"
#include "common/model/checkpoint.h"
#include "common/model/classifier.h"
#include "tests/unit/model/model_test_util.h"

namespace fedtune::model {
namespace {

namespace fs = std::filesystem;

ClassifierOptions Cpu(uint64_t seed, const std::string& backbone = "") {
  ClassifierOptions c;
  c.device = "cpu";
  c.threads = 1;
  c.seed = seed;
  c.backbone_path = backbone;
  return c;
}

ModelSpec SpecFor(FineTuneMethod method, bool ffa = false) {
  ModelSpec s = testing::TinySpec();
  s.method = method;
  s.lora.freeze_a = ffa;
  return s;
}

class GlobalState : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/global_state_" + std::to_string(getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A "pretrained" backbone: a seeded random ViT whose biases, norms and
  // LayerScale are far from their initial values, saved at `image_size`.
  std::string Pretrained(int image_size) {
    ModelSpec s = testing::TinySpec();
    s.vit.image_size = image_size;
    auto m = ViTClassifier(s);
    torch::NoGradGuard g;
    torch::manual_seed(1234);
    for (auto& p : m->dinov2->parameters()) p.add_(torch::randn_like(p) * 0.3);
    auto tensors = BackboneTensors(m->dinov2, BackboneSource{});
    EXPECT_TRUE(tensors.ok());
    const std::string path = dir_ + "/pretrained-" + std::to_string(image_size) + ".safetensors";
    EXPECT_TRUE(WriteSafetensors(path, *tensors).ok());
    return path;
  }

  TensorMap SavedBackbone(Classifier& c) {
    const std::string path = dir_ + "/saved.safetensors";
    EXPECT_TRUE(c.SaveBackbone(path).ok());
    auto f = SafetensorsFile::Open(path);
    EXPECT_TRUE(f.ok());
    return f->ReadAll();
  }

  std::string dir_;
};

TEST_F(GlobalState, RoundZeroIsTheSitesCheckpointForEveryMethod) {
  const std::string base = Pretrained(32);
  auto file = SafetensorsFile::Open(base);
  ASSERT_TRUE(file.ok());
  const TensorMap checkpoint = file->ReadAll();
  struct Case {
    FineTuneMethod method;
    bool ffa;
  };
  for (const Case c : {Case{FineTuneMethod::kLora, false}, Case{FineTuneMethod::kLora, true},
                       Case{FineTuneMethod::kBitFit, false}, Case{FineTuneMethod::kLinearProbe, false},
                       Case{FineTuneMethod::kFull, false}}) {
    SCOPED_TRACE(std::string(FineTuneMethodName(c.method)) + (c.ffa ? " (ffa)" : ""));
    // The coordinator: a fresh model with no backbone at all.
    auto coordinator = Classifier::Create(SpecFor(c.method, c.ffa), Cpu(7));
    ASSERT_TRUE(coordinator.ok()) << coordinator.status();
    auto v0 = (*coordinator)->GlobalState();
    ASSERT_TRUE(v0.ok()) << v0.status();
    size_t backbone_tensors = 0;
    for (const auto& [name, t] : *v0) {
      if (name.find("lora_") != std::string::npos || name.find(".classifier.") != std::string::npos) continue;
      ++backbone_tensors;
      const std::vector<float> values = t.ToFloats().value();
      for (float x : values) ASSERT_EQ(x, 0.0f) << name << " is a difference from the base: zero in version 0";
    }
    if (c.method == FineTuneMethod::kBitFit || c.method == FineTuneMethod::kFull) {
      EXPECT_GT(backbone_tensors, 0u);
    }
    // A site: the pretrained base, then version 0.
    auto site = Classifier::Create(SpecFor(c.method, c.ffa), Cpu(99, base));
    ASSERT_TRUE(site.ok()) << site.status();
    ASSERT_TRUE((*site)->SetGlobalState(*v0).ok());
    EXPECT_EQ(SavedBackbone(**site), checkpoint) << "the site's backbone must still be its checkpoint";
    // Adapters and head are version 0's values.
    auto back = (*site)->GlobalState();
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, *v0);
  }
}

TEST_F(GlobalState, FullFineTuningFederatesWhenTheCheckpointGridDiffers) {
  // The checkpoint was saved at 48 px (6x6 patches); the job runs at 32 px.
  const std::string base = Pretrained(48);
  auto coordinator = Classifier::Create(SpecFor(FineTuneMethod::kFull), Cpu(7));
  ASSERT_TRUE(coordinator.ok());
  const TensorMap v0 = *(*coordinator)->GlobalState();
  auto site = Classifier::Create(SpecFor(FineTuneMethod::kFull), Cpu(99, base));
  ASSERT_TRUE(site.ok()) << site.status();
  ASSERT_TRUE((*site)->SetGlobalState(v0).ok());
  // The site computes what the checkpoint computes (positions interpolated
  // once, at load, exactly as the forward pass would).
  auto reference = Classifier::Create(SpecFor(FineTuneMethod::kLinearProbe), Cpu(99, base));
  ASSERT_TRUE(reference.ok());
  TensorMap head;
  for (const auto& [name, t] : v0) {
    if (name.find(".classifier.") != std::string::npos) head[name] = t;
  }
  ASSERT_TRUE((*reference)->SetTrainableState(head).ok());
  InMemoryDataset data(32, 32, 3);
  std::vector<float> px(32 * 32);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<float>((i * 37) % 101) / 100.0f;
  const float labels[3] = {1, 0, 1};
  ASSERT_TRUE(data.Add(px, labels).ok());
  auto a = (*site)->Predict(data), b = (*reference)->Predict(data);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->size(); ++i) EXPECT_NEAR((*a)[i], (*b)[i], 1e-6);
  // An update after training has the global's shapes.
  TrainOptions o;
  o.epochs = 1;
  o.batch_size = 1;
  ASSERT_TRUE((*site)->Train(data, InMemoryDataset(32, 32, 3), o).ok());
  auto update = (*site)->UpdateState();
  ASSERT_TRUE(update.ok());
  ASSERT_EQ(update->size(), v0.size());
  for (const auto& [name, t] : v0) EXPECT_EQ(update->at(name).shape, t.shape) << name;
}

TEST_F(GlobalState, FfaLoraKeepsATheGlobalsAndLeavesItOutOfTheUpdate) {
  auto coordinator = Classifier::Create(SpecFor(FineTuneMethod::kLora, true), Cpu(7));
  ASSERT_TRUE(coordinator.ok());
  const TensorMap v0 = *(*coordinator)->GlobalState();
  auto site = Classifier::Create(SpecFor(FineTuneMethod::kLora, true), Cpu(99));
  ASSERT_TRUE(site.ok());
  ASSERT_TRUE((*site)->SetGlobalState(v0).ok());
  InMemoryDataset data(32, 32, 3);
  std::vector<float> px(32 * 32, 0.5f);
  const float labels[3] = {1, 0, 1};
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(data.Add(px, labels).ok());
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 2;
  o.learning_rate = 1e-2;
  ASSERT_TRUE((*site)->Train(data, InMemoryDataset(32, 32, 3), o).ok());
  const TensorMap update = *(*site)->UpdateState();
  const TensorMap after = *(*site)->GlobalState();
  size_t a_tensors = 0, b_changed = 0;
  for (const auto& [name, t] : v0) {
    if (name.find(".lora_A.") != std::string::npos) {
      ++a_tensors;
      EXPECT_EQ(update.count(name), 0u) << name;
      EXPECT_EQ(after.at(name), t) << name << " must stay as version 0 made it";
    } else {
      ASSERT_EQ(update.count(name), 1u) << name;
      b_changed += update.at(name) == t ? 0 : 1;
    }
  }
  EXPECT_GT(a_tensors, 0u);
  EXPECT_GT(b_changed, 0u);
}

TEST_F(GlobalState, AStateThatDoesNotFitIsRefusedWholesale) {
  auto site = Classifier::Create(SpecFor(FineTuneMethod::kBitFit), Cpu(1));
  ASSERT_TRUE(site.ok());
  const TensorMap before = *(*site)->GlobalState();
  TensorMap broken = before;
  broken.erase(broken.begin());
  broken["base_model.model.unknown"] = *Tensor::FromFloats({1}, std::vector<float>{0});
  auto st = (*site)->SetGlobalState(broken);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("missing 1"), std::string::npos) << st;
  EXPECT_NE(st.message().find("unexpected 1"), std::string::npos) << st;
  EXPECT_EQ(*(*site)->GlobalState(), before);
}

}  // namespace
}  // namespace fedtune::model
