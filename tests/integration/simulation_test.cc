// fedtune study as an operator runs it: a small scaling study over a
// synthetic federation (CPU, tiny ViT, two sizes), its table, CSV, JSON and
// learning-curve plot checked for shape and content, then resumed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>

#include "tests/testing/run_command.h"

namespace {

namespace fs = std::filesystem;
using fedtune::testing::RunCommand;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

class Study : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/simulation_" + std::to_string(getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ + "/job.toml")
        << "[job]\nname = \"tiny\"\nrounds = 2\nmin_sites = 3\n[backbone]\narchitecture = \"vit-tiny/16\"\n"
           "image_size = 32\nsha256 = \"" << std::string(64, '0') << "\"\n[model]\nfindings = [\"Cardiomegaly\", "
           "\"Pleural effusion\", \"Nodule/Mass\", \"Pneumothorax\"]\n[model.lora]\nrank = 4\n[train]\n"
           "local_epochs = 1\nbatch_size = 8\nlearning_rate = 0.003\n";
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string Sim(const std::string& args, int* code) const {
    std::string out;
    *code = RunCommand(std::string(FEDTUNE_CLI_BIN) + " " + args, &out);
    return out;
  }
  std::string dir_;
};

TEST_F(Study, ScalingTableAndCurvesHaveEveryCellAndResume) {
  std::ofstream(dir_ + "/study.toml")
      << "[study]\nsizes = [24, 60]\nepochs = 2\nlocal_epochs = 1\nbootstrap_resamples = 50\n"
         "[simulation]\njob = \"job.toml\"\nwork_dir = \"study\"\n"
         "[synth]\nsites = [\"north\", \"south\", \"east\"]\npatients = [40, 32, 32]\n"
         "styles = [\"plain\", \"mono1-rle\", \"cr\"]\ndicom_size = 64\nseed = 3\nk = 3\nmin_train_images = 5\n";
  int code = 0;
  std::string out = Sim("study scaling --config " + dir_ + "/study.toml", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("10 cells: 10 run now, 0 done before"), std::string::npos) << out;
  EXPECT_NE(out.find("[10/10] scaling: lora, fedavg, 60 images, local:east"), std::string::npos) << out;
  const std::string study = dir_ + "/study";

  // results.json: 2 sizes x (pooled, federated, 3 local-only) cells, each
  // with a macro AUROC inside its interval and the images it trained on.
  const auto results = nlohmann::json::parse(Read(study + "/results.json"));
  EXPECT_EQ(results["study"], "scaling");
  ASSERT_EQ(results["cells"].size(), 10u);
  std::map<std::string, std::map<int64_t, int64_t>> images;  // arm -> size -> images
  for (const auto& c : results["cells"]) {
    ASSERT_EQ(c["status"], "done") << c.dump();
    const auto& auc = c["macro"]["auroc"];
    const double v = auc["value"].get<double>();
    EXPECT_GT(v, 0.0);
    EXPECT_LE(v, 1.0);
    EXPECT_LE(auc["lower"].get<double>(), v + 1e-12) << c["key"];
    EXPECT_GE(auc["upper"].get<double>(), v - 1e-12) << c["key"];
    EXPECT_EQ(c["findings"].size(), 4u);
    EXPECT_GE(c["best_epoch"].get<int>(), 1);
    EXPECT_LE(c["best_epoch"].get<int>(), 2);
    EXPECT_GT(c["seconds_per_epoch"].get<double>(), 0.0);
    EXPECT_EQ(c["test_cases"], results["test_cases"]);
    const std::string arm = c["site"].get<std::string>().empty() ? c["arm"].get<std::string>()
                                                                 : "local:" + c["site"].get<std::string>();
    images[arm][c["size"].get<int64_t>()] = c["train_images"].get<int64_t>();
  }
  // Nested equal shares: 8 and 20 per site; pooled trains on the union of
  // the federation's shares.
  EXPECT_EQ(images["pooled"][24], 24);
  EXPECT_EQ(images["pooled"][60], 60);
  EXPECT_EQ(images["federated"][60], 60);
  EXPECT_EQ(images["local:north"][24], 8);
  EXPECT_EQ(images["local:south"][60], 20);

  // table.md: the macro table with one row per cell, the seed's timings, and
  // one per-finding table (4 findings and the mean) per cell.
  const std::string table = Read(study + "/table.md");
  EXPECT_NE(table.find("## Macro means on the pooled test set"), std::string::npos);
  EXPECT_NE(table.find("| 60 | federated |"), std::string::npos) << table.substr(0, 2000);
  EXPECT_NE(table.find("| 8 (share of 24) | local:south |"), std::string::npos);
  EXPECT_NE(table.find("| 100 (seed) | | 26 s |"), std::string::npos);
  EXPECT_NE(table.find("| 4000 (seed) | | 12.1 min |"), std::string::npos);
  EXPECT_EQ(Count(table, "| **mean** |"), 10u);
  EXPECT_EQ(Count(table, "| Pneumothorax |"), 10u);

  // results.csv: six metrics per evaluable finding and for the macro mean.
  const std::string csv = Read(study + "/results.csv");
  EXPECT_EQ(csv.rfind("study,method,strategy,size,train_images,arm,seed,finding,metric,value,ci_lower,ci_upper\n", 0),
            0u);
  EXPECT_EQ(Count(csv, ",macro,auroc,"), 10u);
  EXPECT_EQ(Count(csv, ",macro,"), 60u);

  // curves.svg: well-formed, one series per arm, each through both sizes.
  const std::string svg = Read(study + "/curves.svg");
  EXPECT_EQ(Count(svg, "<g class=\"series\""), 5u);
  EXPECT_NE(svg.find("data-name=\"pooled\""), std::string::npos);
  EXPECT_NE(svg.find("data-name=\"local:east\""), std::string::npos);
  EXPECT_EQ(Count(svg, "<circle"), 10u);
  if (std::system("command -v python3 >/dev/null 2>&1") == 0) {
    std::string parsed;
    EXPECT_EQ(RunCommand("python3 -c \"import xml.etree.ElementTree as E; r = E.parse('" + study +
                             "/curves.svg').getroot(); print(len(r.findall('{http://www.w3.org/2000/svg}g')))\"",
                         &parsed),
              0)
        << parsed;
    EXPECT_EQ(parsed, "5\n");
  }

  // Resumed: a finished study runs nothing again; a lost cell is run alone.
  out = Sim("study scaling --config " + dir_ + "/study.toml", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("10 cells: 0 run now, 10 done before"), std::string::npos) << out;
  fs::remove(study + "/cells/n24-lora-fedavg-pooled-s0.json");
  out = Sim("study scaling --config " + dir_ + "/study.toml", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("10 cells: 1 run now, 9 done before"), std::string::npos) << out;
  const auto again = nlohmann::json::parse(Read(study + "/results.json"));
  // The same seeds give the same pooled model.
  EXPECT_DOUBLE_EQ(again["cells"][0]["macro"]["auroc"]["value"].get<double>(),
                   results["cells"][0]["macro"]["auroc"]["value"].get<double>());
}

// Strategies over three seeds: each paired with the reference strategy's
// run of the same seed on the same test cases (DeLong), per finding; and the
// methods study over 17-finding sites with shifts runs every method.
TEST_F(Study, StrategiesArePairedPerSeedAndMethodsAllRun) {
  const std::string synth =
      "[synth]\nsites = [\"a\", \"b\", \"c\"]\npatients = [30, 24, 24]\ndicom_size = 64\nk = 3\n"
      "min_train_images = 5\nfindings = \"vindr17\"\nco_occurrence = true\ngamma = [1.0, 1.2, 0.85]\n"
      "noise = [0.0, 0.02, 0.01]\nblur = [0, 1, 0.5]\nprevalence_scale = [3, 3, 3]\n";
  std::ofstream(dir_ + "/strategies.toml")
      << "[study]\nstrategies = [\"fedavg\", \"ffa-lora\"]\nseeds = [0, 1, 2]\nepochs = 2\n"
         "bootstrap_resamples = 20\n[simulation]\njob = \"job.toml\"\nwork_dir = \"strategies\"\n"
      << synth;
  int code = 0;
  std::string out = Sim("study strategies --config " + dir_ + "/strategies.toml", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("6 cells: 6 run now"), std::string::npos) << out;
  const std::string paired = Read(dir_ + "/strategies/paired.csv");
  EXPECT_EQ(paired.rfind("size,method,seed,strategy,reference,finding,auroc,auroc_reference,difference,z,p_value\n", 0),
            0u);
  for (int seed = 0; seed < 3; ++seed) {
    EXPECT_NE(paired.find("0,lora," + std::to_string(seed) + ",ffa-lora,fedavg,Cardiomegaly,"), std::string::npos)
        << paired;
  }
  EXPECT_EQ(Count(paired, ",fedavg,fedavg,"), 0u) << "the reference is not compared with itself";
  const std::string table = Read(dir_ + "/strategies/table.md");
  EXPECT_NE(table.find("## Paired comparisons against fedavg (DeLong, same test cases)"), std::string::npos);
  EXPECT_NE(table.find("| ffa-lora | Cardiomegaly |"), std::string::npos);
  const std::string svg = Read(dir_ + "/strategies/curves.svg");
  EXPECT_EQ(Count(svg, "<g class=\"series\""), 2u);
  EXPECT_EQ(Count(svg, "<circle"), 6u);

  std::ofstream(dir_ + "/methods.toml")
      << "[study]\nsizes = [0]\narms = [\"pooled\", \"federated\"]\nepochs = 1\nbootstrap_resamples = 20\n"
         "[study.learning_rate]\nfull = 0.0003\n[simulation]\njob = \"job.toml\"\nwork_dir = \"methods\"\n"
      << synth;
  out = Sim("study methods --config " + dir_ + "/methods.toml", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("8 cells: 8 run now"), std::string::npos) << out;
  const auto results = nlohmann::json::parse(Read(dir_ + "/methods/results.json"));
  std::set<std::string> methods;
  for (const auto& c : results["cells"]) {
    EXPECT_EQ(c["status"], "done") << c.dump();
    methods.insert(c["method"].get<std::string>());
    EXPECT_TRUE(c["macro"]["mcc"]["value"].is_number()) << c.dump();
    EXPECT_TRUE(c["macro"]["auprc"]["value"].is_number()) << c.dump();
  }
  EXPECT_EQ(methods, (std::set<std::string>{"lora", "bitfit", "linear_probe", "full"}));
  EXPECT_NE(Read(dir_ + "/methods/table.md").find("| full / federated |"), std::string::npos);
}

// Killed (SIGKILL) while its federated run is in progress, a study run
// again keeps the cells it finished and continues that run's job from the
// engine's state instead of starting it over.
TEST_F(Study, AKilledStudyContinuesWhereItStopped) {
  std::ofstream(dir_ + "/study.toml")
      << "[study]\nsizes = [24]\nepochs = 4\nlocal_epochs = 1\nbootstrap_resamples = 20\n"
         "[simulation]\njob = \"job.toml\"\nwork_dir = \"study\"\n"
         "[synth]\nsites = [\"north\", \"south\", \"east\"]\npatients = [40, 32, 32]\ndicom_size = 64\n"
         "seed = 3\nk = 3\nmin_train_images = 5\n";
  const std::string blobs = dir_ + "/study/runs/n24-lora-fedavg-federated-s0/state/blobs";
  std::string out;
  // Wait for the federated run's first global version, then kill.
  ASSERT_EQ(RunCommand("(" + std::string(FEDTUNE_CLI_BIN) + " study scaling --config " + dir_ + "/study.toml >" +
                           dir_ + "/first.log 2>&1 & pid=$!; for i in $(seq 600); do "
                           "[ -n \"$(find " + blobs + " -name 'global-v1.safetensors' 2>/dev/null)\" ] && break; "
                           "sleep 0.05; done; kill -9 $pid; wait $pid; exit 0)",
                       &out),
            0)
      << out;
  ASSERT_TRUE(fs::exists(dir_ + "/study/cells/n24-lora-fedavg-pooled-s0.json")) << Read(dir_ + "/first.log");
  EXPECT_FALSE(fs::exists(dir_ + "/study/table.md")) << "the first run was to be killed before its end";
  int code = 0;
  out = Sim("study scaling --config " + dir_ + "/study.toml", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("5 cells: 4 run now, 1 done before"), std::string::npos) << out;
  EXPECT_NE(out.find("continuing job"), std::string::npos) << out;
  const auto results = nlohmann::json::parse(Read(dir_ + "/study/results.json"));
  ASSERT_EQ(results["cells"].size(), 5u);
  for (const auto& c : results["cells"]) EXPECT_EQ(c["status"], "done") << c.dump();
}

TEST_F(Study, ConfigurationMistakesAreNamed) {
  std::ofstream(dir_ + "/few-seeds.toml")
      << "[study]\nseeds = [0, 1]\n[simulation]\njob = \"job.toml\"\n[synth]\nsites = [\"a\"]\npatients = [10]\n";
  int code = 0;
  std::string out = Sim("study strategies --config " + dir_ + "/few-seeds.toml", &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("at least three seeds (2 given)"), std::string::npos) << out;

  std::ofstream(dir_ + "/arms.toml")
      << "[study]\narms = [\"central\"]\n[simulation]\njob = \"job.toml\"\n[synth]\nsites = [\"a\"]\npatients = [10]\n";
  out = Sim("study scaling --config " + dir_ + "/arms.toml", &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("\"central\" is not an arm (pooled, federated, local)"), std::string::npos) << out;

  std::ofstream(dir_ + "/both.toml") << "[simulation]\njob = \"job.toml\"\n[synth]\nsites = [\"a\"]\npatients = [10]\n"
                                        "[[site]]\nconfig = \"x/site.toml\"\n";
  out = Sim("simulate --config " + dir_ + "/both.toml", &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("not both"), std::string::npos) << out;

  std::ofstream(dir_ + "/secure.toml") << "[simulation]\njob = \"secure.toml.job\"\nwork_dir = \"secure\"\n"
                                          "[synth]\nsites = [\"a\", \"b\"]\npatients = [12, 12]\ndicom_size = 64\n";
  std::ofstream(dir_ + "/secure.toml.job") << Read(dir_ + "/job.toml") << "[privacy]\nsecure_aggregation = true\n";
  out = Sim("simulate --config " + dir_ + "/secure.toml", &code);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("does not run secure aggregation"), std::string::npos) << out;
}

}  // namespace
