#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "site-agent/cli/commands.h"
#include "site-agent/ingest/synth.h"

namespace fedtune::site {

void SetupSynth(CLI::App& app, SynthCommand& cmd) {
  auto* sub = app.add_subcommand("synth", "Write a synthetic hospital: chest-radiograph-like DICOMs with planted PHI "
                                          "and a VinDr-layout labels.csv");
  sub->footer(
      "Example:\n  fedtune-site synth --out /tmp/hospital-a --site hospital-a --patients 40 --style mono1-rle\n"
      "Styles: plain (DX, MONOCHROME2, 12 bit), mono1-rle (MONOCHROME1, 10 bit, RLE),\n"
      "        inverse-jpegls (16 bit, negative rescale slope, JPEG-LS), cr (CR, 14 bit, rescaled, no window)");
  sub->add_option("--out", cmd.out, "Directory to write (created)")->required();
  sub->add_option("--site", cmd.site, "Site name used in file names and planted identifiers")->capture_default_str();
  sub->add_option("--patients", cmd.patients, "Number of patients (1-3 studies each)")->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  sub->add_option("--size", cmd.size, "Image side in pixels")->capture_default_str()->check(CLI::Range(64, 4096));
  sub->add_option("--style", cmd.style, "Scanner style")->capture_default_str()
      ->check(CLI::IsMember({"plain", "mono1-rle", "inverse-jpegls", "cr"}));
  sub->add_option("--findings", cmd.findings,
                  "Findings to draw: comma-separated names, or \"vindr17\" for the 17 VinDr-CXR local findings "
                  "(with VinDr-like prevalences). Default: Cardiomegaly, Pleural effusion, Nodule/Mass, Pneumothorax "
                  "at 0.3, 0.25, 0.2, 0.15");
  sub->add_option("--prevalence", cmd.prevalence,
                  "Comma-separated prevalence of each finding, in the order of --findings (without --findings: "
                  "the first N of Cardiomegaly, Pleural effusion, Nodule/Mass, Pneumothorax)");
  sub->add_flag("--co-occurrence", cmd.co_occurrence,
                "Draw findings that go together clinically (e.g. Cardiomegaly and Pleural effusion) together more "
                "often than chance");
  sub->add_option("--gamma", cmd.gamma, "This scanner's contrast: a gamma on the attenuation map")
      ->capture_default_str()
      ->check(CLI::Range(0.2, 5.0));
  sub->add_option("--noise", cmd.noise, "Extra quantum noise (standard deviation, 0-0.2)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.2));
  sub->add_option("--blur", cmd.blur, "Lower resolution: a box blur of this radius (pixels of a 256 px image)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 16.0));
  sub->add_option("--seed", cmd.seed, "Random seed")->capture_default_str();
  sub->add_option("--label-key", cmd.label_key,
                  "Key labels.csv by file name (column image_id) or by SOPInstanceUID (column sop_instance_uid, "
                  "for images sent over DICOM: [labels] key = key_column = \"sop_instance_uid\")")
      ->capture_default_str()
      ->check(CLI::IsMember({"file_stem", "sop_instance_uid"}));
  sub->add_option("--burned-in-fraction", cmd.burned_in_fraction,
                  "Share of images with a name, birth date and/or record number printed into the pixels (for "
                  "testing [deid] burned_in; where each line lies is written to burned_in.csv)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  sub->add_flag("--markers", cmd.markers,
                "Print a laterality marker (L or R, sometimes with PA, AP or PORTABLE) into every image, as "
                "radiographs carry; [deid] burned_in_markers allows them");
  sub->add_flag("--json", cmd.json, "Print the result as JSON");
  sub->callback([&cmd] { throw CLI::RuntimeError(RunSynth(cmd)); });
}

int RunSynth(const SynthCommand& cmd) {
  ingest::SynthOptions o;
  o.site = cmd.site;
  o.patients = cmd.patients;
  o.image_size = cmd.size;
  o.seed = cmd.seed;
  o.labels_by_sop_instance_uid = cmd.label_key == "sop_instance_uid";
  o.burned_in_fraction = cmd.burned_in_fraction;
  o.markers = cmd.markers;
  auto style = ingest::ScannerStyleNamed(cmd.style);
  if (!style.ok()) {
    std::cerr << "fedtune-site synth: " << style.status().message() << "\n";
    return 2;
  }
  o.style = *style;
  o.co_occurrence = cmd.co_occurrence;
  o.shift.gamma = cmd.gamma;
  o.shift.noise = cmd.noise;
  o.shift.blur = cmd.blur;
  if (!cmd.findings.empty()) {
    o.findings.clear();
    if (cmd.findings == "vindr17") {
      o.findings = ingest::VinDrSynthFindings();
    } else {
      for (absl::string_view f : absl::StrSplit(cmd.findings, ',', absl::SkipEmpty())) o.findings.emplace_back(f);
    }
    o.prevalence.clear();
    for (const auto& f : o.findings) {
      const double p = ingest::VinDrLikePrevalence(f);
      o.prevalence.push_back(std::isfinite(p) ? p : 0.1);  // an unknown name is refused below
    }
  }
  if (!cmd.prevalence.empty()) {
    const bool named = !cmd.findings.empty();
    o.prevalence.clear();
    for (absl::string_view p : absl::StrSplit(cmd.prevalence, ',')) {
      double v = 0;
      if (!absl::SimpleAtod(p, &v) || v < 0 || v > 1) {
        std::cerr << "fedtune-site synth: --prevalence takes numbers in [0, 1] separated by commas\n";
        return 2;
      }
      o.prevalence.push_back(v);
    }
    if (!named) {
      o.findings.resize(o.prevalence.size());
    } else if (o.prevalence.size() != o.findings.size()) {
      std::cerr << "fedtune-site synth: --prevalence needs one value per finding of --findings (" << o.findings.size()
                << ")\n";
      return 2;
    }
  }
  auto r = ingest::WriteSyntheticSite(o, cmd.out);
  if (!r.ok()) {
    std::cerr << "fedtune-site synth: " << r.status().message() << "\n";
    return 1;
  }
  if (cmd.json) {
    std::cout << nlohmann::json{{"images", r->images},
                                {"labels", r->labels_csv},
                                {"out", cmd.out},
                                {"text_lines", r->burned_in.size()}}
                     .dump()
              << "\n";
  } else {
    std::cout << "wrote " << r->images << " images and " << r->labels_csv << "\n";
  }
  return 0;
}

}  // namespace fedtune::site
