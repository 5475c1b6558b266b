#include "common/model/classifier.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/metrics/evaluation.h"
#include "common/model/vit.h"
#include "tests/unit/model/model_test_util.h"

namespace fedtune::model {
namespace {

// Two learnable findings on noisy 32x32 images: a bright square somewhere in
// the left half, and a bright horizontal bar in the lower half.
InMemoryDataset SyntheticSet(size_t n, uint64_t seed) {
  InMemoryDataset d(32, 32, 2);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(0, 1);
  std::normal_distribution<float> noise(0, 0.05f);
  std::vector<float> px(32 * 32);
  for (size_t i = 0; i < n; ++i) {
    const bool square = u(rng) < 0.4f, bar = u(rng) < 0.4f;
    for (auto& p : px) p = 0.35f + noise(rng);
    if (square) {
      const int r = 4 + static_cast<int>(u(rng) * 20), c = 2 + static_cast<int>(u(rng) * 8);
      for (int y = r; y < r + 6; ++y)
        for (int x = c; x < c + 6; ++x) px[y * 32 + x] = 0.9f;
    }
    if (bar) {
      const int r = 20 + static_cast<int>(u(rng) * 8);
      for (int y = r; y < r + 2; ++y)
        for (int x = 4; x < 28; ++x) px[y * 32 + x] = 0.85f;
    }
    for (auto& p : px) p = std::clamp(p, 0.0f, 1.0f);
    const float labels[2] = {square ? 1.0f : 0.0f, bar ? 1.0f : 0.0f};
    EXPECT_TRUE(d.Add(px, labels).ok());
  }
  return d;
}

ModelSpec Spec() {
  ModelSpec s = testing::TinySpec();
  s.findings = {"Square", "Bar"};
  s.lora.rank = 8;
  s.lora.alpha = 16;
  return s;
}

TrainOptions Options() {
  TrainOptions o;
  o.epochs = 15;
  o.batch_size = 32;
  o.learning_rate = 5e-3;
  o.seed = 7;
  o.augment.max_rotation_deg = 3;
  return o;
}

ClassifierOptions Cpu() {
  ClassifierOptions c;
  c.device = "cpu";
  c.seed = 1;
  return c;
}

// A tiny ViT trained with LoRA on CPU reaches validation AUROC >= 0.95.
TEST(Classifier, LoraLearnsASeparableTask) {
  const InMemoryDataset train = SyntheticSet(512, 1), val = SyntheticSet(200, 2);
  auto model = Classifier::Create(Spec(), Cpu());
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<EpochReport> seen;
  auto result = (*model)->Train(train, val, Options(), [&](const EpochReport& r) { seen.push_back(r); });
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(seen.size(), 15u);
  for (const auto& r : seen) {
    std::cout << "epoch " << r.epoch << " loss " << r.train_loss << " val AUROC " << r.val_auroc << " "
              << r.images_per_second << " img/s\n";
  }
  EXPECT_GE(result->best_val_auroc, 0.95);
  EXPECT_EQ(result->examples, 512);
  // The model holds the best epoch's weights.
  auto probs = (*model)->Predict(val);
  ASSERT_TRUE(probs.ok());
  std::vector<float> labels(val.size() * 2);
  for (size_t i = 0; i < val.size(); ++i) ASSERT_TRUE(val.GetLabels(i, std::span<float>(labels.data() + 2 * i, 2)).ok());
  EXPECT_NEAR(metrics::MacroAuroc(2, *probs, labels), result->best_val_auroc, 1e-9);
}

TEST(Classifier, SameSeedSameWeights) {
  const InMemoryDataset train = SyntheticSet(64, 3), val = SyntheticSet(32, 4);
  TrainOptions o = Options();
  o.epochs = 2;
  auto run = [&] {
    auto m = *Classifier::Create(Spec(), Cpu());
    EXPECT_TRUE(m->Train(train, val, o).ok());
    return *m->TrainableState();
  };
  EXPECT_EQ(run(), run());
}

TEST(Classifier, FedProxKeepsWeightsNearTheStart) {
  const InMemoryDataset train = SyntheticSet(64, 5), empty(32, 32, 2);
  TrainOptions o = Options();
  o.epochs = 2;
  o.augment.enabled = false;
  auto drift = [&](double mu) {
    auto m = *Classifier::Create(Spec(), Cpu());
    TensorMap before = *m->TrainableState();
    o.fedprox_mu = mu;
    EXPECT_TRUE(m->Train(train, empty, o).ok());
    TensorMap after = *m->TrainableState();
    double d = 0;
    for (const auto& [k, t] : before) {
      auto a = *t.ToFloats(), b = *after[k].ToFloats();
      for (size_t i = 0; i < a.size(); ++i) d += (a[i] - b[i]) * (a[i] - b[i]);
    }
    return d;
  };
  EXPECT_LT(drift(1000.0), drift(0.0) * 0.5);
}

// keep_best_epoch = false returns the last epoch's weights whatever the
// validation figures: the same state as training without a validation set.
TEST(Classifier, KeepLastEpochIgnoresValidation) {
  const InMemoryDataset train = SyntheticSet(64, 8), val = SyntheticSet(32, 9), empty(32, 32, 2);
  TrainOptions o = Options();
  o.epochs = 3;
  o.keep_best_epoch = false;
  auto with_val = *Classifier::Create(Spec(), Cpu());
  auto r = with_val->Train(train, val, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->best_epoch, 3);
  auto without_val = *Classifier::Create(Spec(), Cpu());
  ASSERT_TRUE(without_val->Train(train, empty, o).ok());
  EXPECT_EQ(*with_val->TrainableState(), *without_val->TrainableState());
}

// With every label unknown the loss has no gradient, so one AdamW step is its
// weight decay alone: weights shrink by 1 - lr x decay, while biases, norms,
// LayerScale, position embeddings and tokens keep their pretrained values.
TEST(Classifier, WeightDecaySparesBiasesNormsScalesPositionsAndTokens) {
  ModelSpec s = Spec();
  s.method = FineTuneMethod::kFull;
  auto m = *Classifier::Create(s, Cpu());
  InMemoryDataset unknown(32, 32, 2), empty(32, 32, 2);
  std::vector<float> px(32 * 32, 0.4f);
  const float labels[2] = {-1, -1};
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(unknown.Add(px, labels).ok());
  TrainOptions o;
  o.epochs = 1;
  o.batch_size = 4;
  o.learning_rate = 0.1;
  o.weight_decay = 1.0;
  o.warmup_fraction = 0;
  o.grad_clip_norm = 0;
  o.augment.enabled = false;
  const TensorMap before = *m->TrainableState();
  ASSERT_TRUE(m->Train(unknown, empty, o).ok());
  const TensorMap after = *m->TrainableState();
  int spared = 0, decayed = 0;
  for (const auto& [name, t] : before) {
    const auto b = *t.ToFloats(), a = *after.at(name).ToFloats();
    const bool no_decay = IsNoDecayParameter(name.substr(std::string("base_model.model.").size()));
    (no_decay ? spared : decayed)++;
    for (size_t i = 0; i < b.size(); ++i) {
      ASSERT_NEAR(a[i], no_decay ? b[i] : b[i] * 0.9f, 1e-6) << name << (no_decay ? " (spared)" : " (decayed)");
    }
  }
  EXPECT_GT(spared, 10);
  EXPECT_GT(decayed, 10);
  for (const char* n : {"dinov2.embeddings.cls_token", "dinov2.embeddings.position_embeddings",
                        "dinov2.encoder.layer.0.layer_scale1.lambda1", "dinov2.encoder.layer.1.norm2.weight",
                        "dinov2.layernorm.bias", "classifier.bias"}) {
    EXPECT_TRUE(IsNoDecayParameter(n)) << n;
  }
  EXPECT_FALSE(IsNoDecayParameter("dinov2.encoder.layer.0.mlp.fc1.weight"));
  EXPECT_FALSE(IsNoDecayParameter("classifier.weight"));
}

// The federation's class weights replace the site's own: given the site's own
// ratios they train exactly as before; given ones they train as no weighting.
TEST(Classifier, ClassWeightsGivenByTheFederationReplaceTheSitesOwn) {
  const InMemoryDataset train = SyntheticSet(64, 11), empty(32, 32, 2);
  std::vector<double> pos(2, 0), neg(2, 0);
  std::vector<float> l(2);
  for (size_t i = 0; i < train.size(); ++i) {
    ASSERT_TRUE(train.GetLabels(i, l).ok());
    for (size_t k = 0; k < 2; ++k) (l[k] == 1 ? pos : neg)[k] += 1;
  }
  auto run = [&](ClassWeighting w, std::vector<double> given) {
    TrainOptions o = Options();
    o.epochs = 1;
    o.class_weighting = w;
    o.pos_weight = std::move(given);
    auto m = *Classifier::Create(Spec(), Cpu());
    auto r = m->Train(train, empty, o);
    EXPECT_TRUE(r.ok()) << r.status();
    return *m->TrainableState();
  };
  const TensorMap own = run(ClassWeighting::kOwn, {});
  EXPECT_EQ(run(ClassWeighting::kGiven, {neg[0] / pos[0], neg[1] / pos[1]}), own);
  const TensorMap none = run(ClassWeighting::kNone, {});
  EXPECT_EQ(run(ClassWeighting::kGiven, {1, 1}), none);
  EXPECT_NE(none, own);
  TrainOptions o = Options();
  o.class_weighting = ClassWeighting::kGiven;
  o.pos_weight = {2.0};
  auto m = *Classifier::Create(Spec(), Cpu());
  EXPECT_EQ(m->Train(train, empty, o).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Classifier, CancellationStopsTraining) {
  const InMemoryDataset train = SyntheticSet(64, 6), empty(32, 32, 2);
  auto m = *Classifier::Create(Spec(), Cpu());
  std::atomic<bool> cancel{true};
  auto r = m->Train(train, empty, Options(), {}, &cancel);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled);
}

TEST(Classifier, RefusesBadInputsWithClearErrors) {
  ModelSpec bad = Spec();
  bad.findings.clear();
  EXPECT_EQ(Classifier::Create(bad, Cpu()).status().code(), absl::StatusCode::kInvalidArgument);
  ClassifierOptions missing = Cpu();
  missing.backbone_path = "/nonexistent/backbone.safetensors";
  EXPECT_EQ(Classifier::Create(Spec(), missing).status().code(), absl::StatusCode::kNotFound);
  auto m = *Classifier::Create(Spec(), Cpu());
  InMemoryDataset three(32, 32, 3);
  EXPECT_EQ(m->Train(three, three, Options()).status().code(), absl::StatusCode::kInvalidArgument);
  InMemoryDataset empty(32, 32, 2);
  EXPECT_EQ(m->Train(empty, empty, Options()).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fedtune::model
