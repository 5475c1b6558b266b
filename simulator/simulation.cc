#include "simulator/simulation.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <toml++/toml.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/core/config.h"
#include "common/core/file_io.h"
#include "common/core/hashing.h"
#include "common/core/status.h"
#include "common/fl/task_spec.h"
#include "common/model/classifier.h"
#include "coordinator/engine/initial_weights.h"
#include "coordinator/engine/job_spec.h"
#include "coordinator/engine/round_engine.h"
#include "coordinator/report/report.h"
#include "site-agent/config/site_config.h"
#include "site-agent/ingest/ingest.h"
#include "site-agent/ingest/synth.h"
#include "site-agent/runner/disclosure.h"
#include "site-agent/runner/pretrain.h"
#include "site-agent/runner/site_daemon.h"
#include "site-agent/runner/task_executor.h"

namespace fedtune::sim {
namespace {

namespace fs = std::filesystem;

std::string Resolve(const std::string& base_dir, const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return (fs::path(base_dir) / path).lexically_normal().string();
}

std::string TomlList(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) absl::StrAppend(&out, out.empty() ? "" : ", ", "\"", s, "\"");
  return absl::StrCat("[", out, "]");
}

// The virtual clock: it moves by a tick per scheduling pass, and jumps when
// no site has anything to do, so deadlines pass only when the federation is
// really stuck, however long training takes on this machine.
class SimClock final : public coordinator::Clock {
 public:
  SimClock()
      : now_(std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                 .count()) {}
  int64_t NowMs() const override { return now_.load(); }
  void Advance(int64_t ms) { now_ += ms; }

 private:
  std::atomic<int64_t> now_;
};

bool Terminal(v1::JobState s) {
  return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_FAILED || s == v1::JOB_STATE_CANCELLED;
}

}  // namespace

absl::StatusOr<SimulationConfig> LoadSimulationConfig(const std::string& path, bool study) {
  ASSIGN_OR_RETURN(Config root, Config::LoadFile(path));
  toml::table doc;  // parsed once more for what Config does not read (its syntax was checked above)
  try {
    doc = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", std::string(e.description())));
  }
  if (study) {
    RETURN_IF_ERROR(root.RejectUnknownKeys({"study", "simulation", "site", "synth"}));
  } else {
    RETURN_IF_ERROR(root.RejectUnknownKeys({"simulation", "site", "synth"}));
  }
  const std::string base = fs::absolute(path).parent_path().string();
  SimulationConfig c;
  ASSIGN_OR_RETURN(Config s, root.GetTable("simulation"));
  RETURN_IF_ERROR(s.RejectUnknownKeys({"job", "work_dir", "parallel", "bootstrap_resamples"}));
  ASSIGN_OR_RETURN(std::string job, s.GetString("job"));
  c.job_source = Resolve(base, job);
  ASSIGN_OR_RETURN(c.job_toml, ReadFileBytes(c.job_source));
  ASSIGN_OR_RETURN(std::string work, s.GetString("work_dir", "sim"));
  c.work_dir = Resolve(base, work);
  ASSIGN_OR_RETURN(int64_t parallel, s.GetIntInRange("parallel", 1, 64, 1));
  c.parallel = static_cast<int>(parallel);
  ASSIGN_OR_RETURN(int64_t boot, s.GetIntInRange("bootstrap_resamples", -1, 100000, -1));
  c.bootstrap_resamples = static_cast<int>(boot);
  const bool has_sites = root.Has("site"), has_synth = root.Has("synth");
  if (has_sites == has_synth) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": give the virtual sites either as [[site]] tables (config = \"their site.toml\", workspaces already "
              "ingested) or as one [synth] table (a synthetic federation), not ",
        has_sites ? "both" : "neither"));
  }
  if (has_synth) {
    ASSIGN_OR_RETURN(Config t, root.GetTable("synth"));
    RETURN_IF_ERROR(t.RejectUnknownKeys(
        {"sites", "patients", "styles", "dicom_size", "seed", "k", "min_train_images", "backbone", "pretrain_patients",
         "pretrain_epochs", "findings", "co_occurrence", "gamma", "noise", "blur", "prevalence_scale"}));
    SynthFederation f;
    ASSIGN_OR_RETURN(f.sites, t.GetStringList("sites", f.sites));
    if (t.Has("patients")) {
      // Config reads lists of strings only; the counts come from the document.
      const auto* arr = doc["synth"]["patients"].as_array();
      if (arr == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": key 'synth.patients': expected a list of integers"));
      }
      f.patients.clear();
      for (const auto& n : *arr) {
        auto v = n.value<int64_t>();
        if (!v || *v < 4 || *v > 1000000) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": key 'synth.patients': expected integers from 4 to 1000000, one per site"));
        }
        f.patients.push_back(static_cast<int>(*v));
      }
    }
    if (doc["synth"]["findings"].is_string()) {
      if (doc["synth"]["findings"].value_or(std::string()) != "vindr17") {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": key 'synth.findings': \"vindr17\" or a list of finding names"));
      }
      f.findings = ingest::VinDrSynthFindings();
    } else {
      ASSIGN_OR_RETURN(f.findings, t.GetStringList("findings", {}));
    }
    ASSIGN_OR_RETURN(f.co_occurrence, t.GetBool("co_occurrence", false));
    for (auto [key, out, lo, hi] : {std::tuple<const char*, std::vector<double>*, double, double>{"gamma", &f.gamma, 0.2, 5},
                                    {"noise", &f.noise, 0, 0.2},
                                    {"blur", &f.blur, 0, 16},
                                    {"prevalence_scale", &f.prevalence_scale, 0, 20}}) {
      const auto* arr = doc["synth"][key].as_array();
      if (doc["synth"][key] && arr == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": key 'synth.", key, "': expected a list of numbers"));
      }
      if (arr == nullptr) continue;
      for (const auto& n : *arr) {
        auto v = n.value<double>();
        if (!v || *v < lo || *v > hi) {
          return absl::InvalidArgumentError(
              absl::StrCat(path, ": key 'synth.", key, "': numbers from ", lo, " to ", hi, ", one per site"));
        }
        out->push_back(*v);
      }
    }
    ASSIGN_OR_RETURN(f.styles, t.GetStringList("styles", f.styles));
    for (const auto& st : f.styles) {
      if (auto named = ingest::ScannerStyleNamed(st); !named.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": key 'synth.styles': ", named.status().message()));
      }
    }
    if (f.styles.empty()) f.styles = {"plain"};
    if (f.sites.empty() || f.patients.size() != f.sites.size()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": [synth] needs one patients count per site (",
                                                     f.sites.size(), " sites, ", f.patients.size(), " counts)"));
    }
    for (const auto* v : {&f.gamma, &f.noise, &f.blur, &f.prevalence_scale}) {
      if (!v->empty() && v->size() != f.sites.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": [synth] gamma, noise, blur and prevalence_scale take one value per site (", f.sites.size(), ")"));
      }
    }
    ASSIGN_OR_RETURN(int64_t size, t.GetIntInRange("dicom_size", 64, 4096, f.dicom_size));
    f.dicom_size = static_cast<int>(size);
    ASSIGN_OR_RETURN(int64_t seed, t.GetInt("seed", 1));
    f.seed = static_cast<uint64_t>(seed);
    ASSIGN_OR_RETURN(int64_t k, t.GetIntInRange("k", 1, 1000, f.k_threshold));
    f.k_threshold = static_cast<int>(k);
    ASSIGN_OR_RETURN(f.min_train_images, t.GetIntInRange("min_train_images", 1, 1000000, f.min_train_images));
    ASSIGN_OR_RETURN(std::string backbone, t.GetString("backbone", ""));
    f.backbone = Resolve(base, backbone);
    ASSIGN_OR_RETURN(int64_t pp, t.GetIntInRange("pretrain_patients", 0, 1000000, 0));
    f.pretrain_patients = static_cast<int>(pp);
    ASSIGN_OR_RETURN(int64_t pe, t.GetIntInRange("pretrain_epochs", 1, 1000, f.pretrain_epochs));
    f.pretrain_epochs = static_cast<int>(pe);
    if (!f.backbone.empty() && f.pretrain_patients > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": [synth] takes a backbone file or pretrain_patients, not both"));
    }
    c.synth = std::move(f);
    return c;
  }
  auto* arr = doc["site"].as_array();
  if (arr == nullptr || arr->empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": [[site]] must be an array of tables (config = ...)"));
  }
  for (size_t i = 0; i < arr->size(); ++i) {
    auto* t = (*arr)[i].as_table();
    auto cfg = t ? (*t)["config"].value<std::string>() : std::nullopt;
    if (!cfg || t->size() != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": site ", i + 1, ": each [[site]] has exactly one key, config = \"path/site.toml\""));
    }
    ASSIGN_OR_RETURN(site::SiteConfig sc, site::LoadSiteConfig(Resolve(base, *cfg)));
    for (const auto& other : c.sites) {
      if (other.site_id == sc.site_id) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": site id \"", sc.site_id, "\" appears twice"));
      }
    }
    c.sites.push_back(site::ExecutorOptionsFor(sc));
  }
  return c;
}

absl::StatusOr<std::string> PatchJob(const std::string& job_toml,
                                     const std::vector<std::pair<std::string, std::string>>& assignments) {
  toml::table doc;
  try {
    doc = toml::parse(job_toml);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("job: ", std::string(e.description())));
  }
  for (const auto& [key, value] : assignments) {
    const size_t dot = key.find('.');
    if (dot == std::string::npos) {
      if (!value.empty()) return absl::InvalidArgumentError(absl::StrCat("job key ", key, ": table.key"));
      doc.erase(key);  // a whole table removed
      continue;
    }
    const std::string table = key.substr(0, dot), name = key.substr(dot + 1);
    if (value.empty()) {
      if (auto* t = doc[table].as_table()) t->erase(name);
      continue;
    }
    toml::table parsed;
    try {
      parsed = toml::parse(absl::StrCat("v = ", value));
    } catch (const toml::parse_error& e) {
      return absl::InvalidArgumentError(absl::StrCat("job key ", key, ": ", std::string(e.description())));
    }
    if (!doc.contains(table)) doc.insert(table, toml::table{});
    auto* t = doc[table].as_table();
    if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("job: ", table, " is not a table"));
    t->insert_or_assign(name, *parsed.get("v"));
  }
  std::ostringstream out;
  out << doc << "\n";
  return out.str();
}

absl::Status PrepareSynthetic(SimulationConfig* config, const SimLog& log) {
  if (!config->synth) return absl::OkStatus();
  const SynthFederation& f = *config->synth;
  ASSIGN_OR_RETURN(coordinator::JobSpec job, coordinator::ParseJobSpec(config->job_toml, config->job_source));
  const std::string sites_dir = config->work_dir + "/sites";
  std::error_code ec;
  fs::create_directories(sites_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", sites_dir, ": ", ec.message()));
  const std::vector<std::string> findings = f.findings.empty() ? ingest::SynthFindings() : f.findings;
  std::string backbone = f.backbone;
  if (backbone.empty()) {
    backbone = config->work_dir + "/backbone.safetensors";
    // What the backbone was made with: a changed recipe makes it again.
    const std::string recipe = absl::StrCat(job.backbone_architecture, " ", job.train.image_size(), " seed ", f.seed,
                                            " public ", f.pretrain_patients, " epochs ", f.pretrain_epochs,
                                            " size ", f.dicom_size, " findings ", absl::StrJoin(findings, ","), "\n");
    const std::string recipe_path = backbone + ".recipe";
    if (!fs::exists(backbone) || ReadFileBytes(recipe_path).value_or("") != recipe) {
      fs::remove(backbone, ec);
      if (f.pretrain_patients == 0) {
        v1::TrainConfig tc = job.train;
        tc.set_method("linear_probe");
        ASSIGN_OR_RETURN(model::ModelSpec spec, fl::ModelSpecFor(job.backbone_architecture, tc));
        model::ClassifierOptions o;
        o.device = "cpu";
        o.seed = f.seed;
        ASSIGN_OR_RETURN(auto m, model::Classifier::Create(spec, o));
        RETURN_IF_ERROR(m->SaveBackbone(backbone + ".tmp"));
      } else {
        // A public set: other patients, another scanner's mix, the same
        // findings; ingested like a site's, then pretrained on.
        const std::string pub = config->work_dir + "/public";
        fs::remove_all(pub, ec);
        if (log) log(absl::StrCat("pretraining a ", job.backbone_architecture, " backbone on ", f.pretrain_patients,
                                  " public synthetic patients (", f.pretrain_epochs, " epochs)"));
        ingest::SynthOptions so;
        so.site = "public";
        so.patients = f.pretrain_patients;
        so.image_size = f.dicom_size;
        so.seed = f.seed * 1000 + 999;
        so.findings = findings;
        so.prevalence.clear();
        // The public set shows every sign often enough to learn it.
        for (const auto& name : findings) so.prevalence.push_back(f.findings.empty() ? 0.25 : std::max(0.1, 2 * ingest::VinDrLikePrevalence(name)));
        so.co_occurrence = f.co_occurrence;
        ASSIGN_OR_RETURN(ingest::SynthResult written, ingest::WriteSyntheticSite(so, pub + "/pacs"));
        const int min_side = std::min(f.dicom_size, 256);
        const std::string text = absl::StrCat(
            "[site]\nid = \"public\"\nworkspace = \"ws\"\n[ingest]\nimage_size = ", job.train.image_size(),
            "\nmin_rows = ", min_side, "\nmin_columns = ", min_side,
            "\nkeep_deid_copies = false\n[deid]\nburned_in = \"off\"\n[labels]\nfindings = ",
            TomlList(findings), "\n");
        fs::create_directories(pub + "/ws", ec);
        RETURN_IF_ERROR(WriteFileAtomically(pub + "/site.toml", text));
        RETURN_IF_ERROR(WriteFileAtomically(pub + "/ws/site.key",
                                            Sha256Hex(absl::StrCat("public key ", f.seed)).substr(0, 32), 0600));
        ASSIGN_OR_RETURN(site::SiteConfig sc, site::ParseSiteConfig(text, pub + "/site.toml"));
        sc.ingest.labels_path = written.labels_csv;
        RETURN_IF_ERROR(ingest::IngestDirectory(pub + "/pacs", sc.ingest).status());
        site::PretrainOptions po;
        po.workspace = sc.ingest.workspace;
        po.findings = findings;
        po.arch = job.backbone_architecture;
        po.image_size = job.train.image_size();
        po.epochs = f.pretrain_epochs;
        po.seed = f.seed;
        po.device = "cpu";
        po.out = backbone + ".tmp";
        RETURN_IF_ERROR(site::PretrainBackbone(po, [&log](const model::EpochReport& e) {
                           if (log) log(absl::StrFormat("  pretraining epoch %d/%d loss %.4f val AUROC %.4f", e.epoch,
                                                        e.epochs, e.train_loss, e.val_auroc));
                         }).status());
        fs::remove_all(pub + "/pacs", ec);
      }
      fs::rename(backbone + ".tmp", backbone, ec);
      if (ec) return absl::InternalError(absl::StrCat("cannot write ", backbone, ": ", ec.message()));
      RETURN_IF_ERROR(WriteFileAtomically(recipe_path, recipe));
    }
    ASSIGN_OR_RETURN(std::string sha, Sha256FileHex(backbone));
    ASSIGN_OR_RETURN(config->job_toml, PatchJob(config->job_toml, {{"backbone.sha256", absl::StrCat("\"", sha, "\"")}}));
  }
  config->sites.clear();
  for (size_t i = 0; i < f.sites.size(); ++i) {
    const std::string& id = f.sites[i];
    const std::string dir = sites_dir + "/" + id;
    const std::string toml_path = dir + "/site.toml";
    const std::string ready = dir + "/ready";
    fs::create_directories(dir + "/ws", ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
    const int min_side = std::min(f.dicom_size, 256);
    const std::string text = absl::StrCat(
        "# written by fedtune simulate for its synthetic site ", id, " (", f.patients[i], " patients, style ",
        f.styles[i % f.styles.size()], ", seed ", f.seed, ", size ", f.dicom_size, ", co-occurrence ",
        f.co_occurrence, ", gamma ", f.gamma.empty() ? 1.0 : f.gamma[i], ", noise ", f.noise.empty() ? 0.0 : f.noise[i],
        ", blur ", f.blur.empty() ? 0.0 : f.blur[i], ", prevalence x",
        f.prevalence_scale.empty() ? 1.0 : f.prevalence_scale[i], ")\n[site]\nid = \"", id,
        "\"\nworkspace = \"ws\"\n[ingest]\nimage_size = ", job.train.image_size(), "\nmin_rows = ", min_side,
        "\nmin_columns = ", min_side, "\nkeep_deid_copies = false\n[deid]\nburned_in = \"off\"\n[labels]\nfindings = ",
        TomlList(findings), "\n[stats]\nk = ", f.k_threshold, "\nmin_train_images = ", f.min_train_images,
        "\n[training]\nbackbone = \"", fs::absolute(backbone).string(), "\"\ndevice = \"cpu\"\n");
    if (!fs::exists(ready) || ReadFileBytes(toml_path).value_or("") != text) {
      if (log) log(absl::StrCat("preparing synthetic site ", id, ": ", f.patients[i], " patients, style ",
                                f.styles[i % f.styles.size()]));
      fs::remove_all(dir, ec);
      fs::create_directories(dir + "/ws", ec);
      RETURN_IF_ERROR(WriteFileAtomically(toml_path, text));
      // A fixed site key: the same pseudonyms, and so the same patient
      // splits, on every machine.
      RETURN_IF_ERROR(WriteFileAtomically(dir + "/ws/site.key",
                                          Sha256Hex(absl::StrCat("simulated site key ", id, " ", f.seed)).substr(0, 32),
                                          0600));
      ingest::SynthOptions so;
      so.site = id;
      so.patients = f.patients[i];
      so.image_size = f.dicom_size;
      so.seed = f.seed * 1000 + i + 1;
      if (!f.findings.empty()) {
        so.findings = f.findings;
        so.prevalence.clear();
        for (const auto& name : f.findings) so.prevalence.push_back(ingest::VinDrLikePrevalence(name));
      }
      for (double& p : so.prevalence) {
        p = std::min(1.0, p * (f.prevalence_scale.empty() ? 1.0 : f.prevalence_scale[i]));
      }
      so.co_occurrence = f.co_occurrence;
      if (!f.gamma.empty()) so.shift.gamma = f.gamma[i];
      if (!f.noise.empty()) so.shift.noise = f.noise[i];
      if (!f.blur.empty()) so.shift.blur = f.blur[i];
      ASSIGN_OR_RETURN(so.style, ingest::ScannerStyleNamed(f.styles[i % f.styles.size()]));
      ASSIGN_OR_RETURN(ingest::SynthResult written, ingest::WriteSyntheticSite(so, dir + "/pacs"));
      ASSIGN_OR_RETURN(site::SiteConfig sc, site::ParseSiteConfig(text, toml_path));
      sc.ingest.labels_path = written.labels_csv;
      ASSIGN_OR_RETURN(ingest::IngestSummary summary, ingest::IngestDirectory(dir + "/pacs", sc.ingest));
      if (summary.ingested == 0) {
        return absl::InternalError(absl::StrCat("synthetic site ", id, ": nothing was ingested (",
                                                summary.quarantined, " quarantined)"));
      }
      fs::remove_all(dir + "/pacs", ec);  // the cache holds what training reads
      RETURN_IF_ERROR(WriteFileAtomically(ready, absl::StrCat(summary.ingested, "\n")));
    }
    ASSIGN_OR_RETURN(site::SiteConfig sc, site::ParseSiteConfig(text, toml_path));
    config->sites.push_back(site::ExecutorOptionsFor(sc));
  }
  return absl::OkStatus();
}

absl::StatusOr<SimulationResult> Simulate(const SimulationConfig& config, const SimLog& log) {
  const auto started = std::chrono::steady_clock::now();
  if (config.sites.empty()) return absl::FailedPreconditionError("the simulation has no sites");
  ASSIGN_OR_RETURN(coordinator::JobSpec spec, coordinator::ParseJobSpec(config.job_toml, config.job_source));
  if (spec.secure_aggregation.enabled) {
    return absl::FailedPreconditionError(
        "a simulation does not run secure aggregation ([privacy] secure_aggregation): its key exchange protects "
        "sites from a coordinator, and a simulation has one trust domain. Simulate the job without it; the sum "
        "it computes is the plain mean of the same updates");
  }
  const std::string state_dir = config.work_dir + "/state";
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", state_dir, ": ", ec.message()));

  SimClock clock;
  coordinator::EngineOptions eo;
  eo.state_dir = state_dir;
  eo.initial_weights = coordinator::InitialWeights;
  eo.site_timeout_ms = int64_t{1} << 40;  // virtual sites never go away
  eo.progress_interval_ms = 0;
  ASSIGN_OR_RETURN(std::unique_ptr<coordinator::RoundEngine> engine, coordinator::RoundEngine::Open(eo, &clock));

  // The sites, as their daemons would join.
  const int parallel = std::max(1, std::min<int>(config.parallel, static_cast<int>(config.sites.size())));
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::string> ids;
  std::vector<site::TaskExecutor> executors;
  std::vector<int64_t> declared_train;
  for (const auto& s : config.sites) ids.push_back(s.site_id);
  RETURN_IF_ERROR(engine->SetEnrolledSites(ids));
  for (const auto& s : config.sites) {
    site::ExecutorOptions o = s;
    if (o.threads <= 0) o.threads = std::max(1, cores / parallel);
    if (config.bootstrap_resamples >= 0) o.bootstrap_resamples = config.bootstrap_resamples;
    auto ex = site::TaskExecutor::Create(o);
    if (!ex.ok()) return Annotate(ex.status(), absl::StrCat("site ", s.site_id, ": backbone"));
    v1::DatasetSummary summary = site::SummaryToShare(s.workspace, s.k_threshold, /*keep=*/true);
    int64_t train = -1;
    for (const auto& sp : summary.splits()) {
      if (sp.split() == "train") train = sp.images();
    }
    declared_train.push_back(train);
    RETURN_IF_ERROR(engine->Join(s.site_id, ex->Capabilities(), summary, absl::StrCat("simulated-", s.site_id)));
    executors.push_back(std::move(*ex));
  }

  // The job: continued when one of this name is there, else submitted.
  SimulationResult result;
  ASSIGN_OR_RETURN(std::vector<v1::JobStatus> jobs, engine->ListJobs());
  for (const auto& j : jobs) {
    if (j.name() == spec.name) {
      result.job_id = j.job_id();
      result.resumed = true;
    }
  }
  if (result.job_id.empty()) {
    ASSIGN_OR_RETURN(coordinator::SubmittedJob submitted, engine->SubmitJob(config.job_toml, config.job_source));
    for (const auto& w : submitted.warnings) {
      if (log) log(absl::StrCat("warning: ", w));
    }
    result.job_id = submitted.job_id;
  } else if (log) {
    log(absl::StrCat("continuing job ", result.job_id, " (", spec.name, ") found in ", state_dir));
  }

  std::mutex log_mu;
  int idle_passes = 0;
  int last_round_logged = -1;
  while (true) {
    RETURN_IF_ERROR(engine->Tick());
    ASSIGN_OR_RETURN(v1::JobStatus st, engine->GetJob(result.job_id, /*detail=*/false));
    if (Terminal(st.state())) break;
    const int at = st.state() == v1::JOB_STATE_EVALUATING ? spec.rounds + 1 : st.rounds_done() + 1;
    if (log && st.state() != v1::JOB_STATE_PENDING && at != last_round_logged) {
      last_round_logged = at;
      log(absl::StrCat("job ", result.job_id, ": ",
                       at > spec.rounds ? std::string("final evaluation")
                                        : absl::StrCat("round ", at, " of ", spec.rounds)));
    }
    struct Work {
      size_t site;
      v1::Task task;
    };
    std::vector<Work> work;
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSIGN_OR_RETURN(coordinator::PollResult p, engine->Poll(ids[i], ""));
      if (p.task) work.push_back({i, std::move(*p.task)});
    }
    if (work.empty()) {
      // Nothing to run: let virtual time pass (a round waiting for its
      // deadline, a retry's back-off).
      clock.Advance(idle_passes < 100 ? 100 : 10'000);
      if (++idle_passes > 1'000'000) return absl::DeadlineExceededError("the simulated job makes no progress");
      continue;
    }
    idle_passes = 0;
    std::atomic<size_t> next{0};
    std::vector<absl::Status> failures(work.size());
    auto worker = [&] {
      for (size_t w = next++; w < work.size(); w = next++) {
        const size_t i = work[w].site;
        const v1::Task& task = work[w].task;
        const v1::WeightsRef& ref = task.has_train() ? task.train().weights() : task.evaluate().weights();
        auto file = engine->WeightsForTask(ids[i], task.task_id(), ref);
        if (!file.ok()) {
          failures[w] = file.status();
          continue;
        }
        auto bytes = ReadFileBytes(file->path);
        if (!bytes.ok() || Sha256Hex(*bytes) != file->sha256) {
          failures[w] = absl::DataLossError(absl::StrCat("global weights ", file->path, " do not match their SHA-256"));
          continue;
        }
        std::atomic<bool> cancel{false};
        auto progress = [&](const v1::ProgressReport& p) {
          auto abandon = engine->Progress(ids[i], p);
          if (abandon.ok() && *abandon) cancel = true;
          if (log && p.phase() == "train" && p.epoch() > 0) {
            std::lock_guard<std::mutex> lock(log_mu);
            log(absl::StrFormat("  %s round %d epoch %d/%d loss %.4f", ids[i], task.round(), p.epoch(), p.epochs(),
                                p.train_loss()));
          }
        };
        auto outcome = executors[i].Run(task, *bytes, progress, &cancel);
        if (!outcome.ok()) {
          failures[w] = outcome.status();
          continue;
        }
        if (task.has_train() && outcome->header.failure_reason().empty()) {
          const VirtualSite& s = config.sites[i];
          outcome->header.set_num_examples(site::ExampleCountToShare(s.workspace, s.k_threshold,
                                                                     outcome->header.num_examples(),
                                                                     task.train().config().max_train_samples(),
                                                                     declared_train[i]));
        }
        auto answer = engine->Submit(ids[i], outcome->header, std::move(outcome->weights));
        if (!answer.ok()) {
          failures[w] = answer.status();
        } else if (!answer->accepted && log) {
          std::lock_guard<std::mutex> lock(log_mu);
          log(absl::StrCat("  ", ids[i], ": the engine did not accept its result: ", answer->reason));
        }
      }
    };
    std::vector<std::thread> threads;
    for (int t = 1; t < parallel; ++t) threads.emplace_back(worker);
    worker();
    for (auto& t : threads) t.join();
    for (size_t w = 0; w < work.size(); ++w) {
      if (!failures[w].ok()) {
        return Annotate(failures[w], absl::StrCat("site ", ids[work[w].site], ", task ", work[w].task.task_id()));
      }
    }
    clock.Advance(100);
  }
  ASSIGN_OR_RETURN(result.status, engine->GetJob(result.job_id, /*detail=*/true));
  for (int v = 0; v <= result.status.rounds_done(); ++v) {
    auto version = engine->GetVersion(result.job_id, v);
    if (version.ok()) result.version_files.push_back(version->file.path);
  }
  if (!result.version_files.empty()) result.final_weights = result.version_files.back();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

absl::Status WriteSimulationReport(const SimulationConfig& config, const SimulationResult& result,
                                   const std::string& out_dir) {
  coordinator::EngineOptions eo;
  eo.state_dir = config.work_dir + "/state";
  SimClock clock;
  ASSIGN_OR_RETURN(std::unique_ptr<coordinator::RoundEngine> engine, coordinator::RoundEngine::Open(eo, &clock));
  ASSIGN_OR_RETURN(std::vector<v1::SiteInfo> sites, engine->ListSites());
  ASSIGN_OR_RETURN(nlohmann::json report, report::BuildReport(result.status, sites));
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", out_dir, ": ", ec.message()));
  RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/report.json", report.dump(2) + "\n"));
  RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/report.html", report::RenderHtml(report)));
  RETURN_IF_ERROR(WriteFileAtomically(out_dir + "/metrics.csv", report::RenderCsv(report)));
  return absl::OkStatus();
}

}  // namespace fedtune::sim
