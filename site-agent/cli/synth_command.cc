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
  sub->add_option("--prevalence", cmd.prevalence,
                  "Comma-separated prevalence of Cardiomegaly, Pleural effusion, Nodule/Mass, Pneumothorax");
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
  if (cmd.style == "mono1-rle") {
    o.style.monochrome1 = true;
    o.style.bits_stored = 10;
    o.style.compression = "rle";
  } else if (cmd.style == "inverse-jpegls") {
    o.style.bits_stored = 16;
    o.style.rescale_slope = -1;
    o.style.rescale_intercept = 65535;
    o.style.compression = "jpegls";
  } else if (cmd.style == "cr") {
    o.style.modality = "CR";
    o.style.bits_stored = 14;
    o.style.rescale_slope = 2;
    o.style.rescale_intercept = -1000;
    o.style.window = false;
  }
  if (!cmd.prevalence.empty()) {
    o.prevalence.clear();
    for (absl::string_view p : absl::StrSplit(cmd.prevalence, ',')) {
      double v = 0;
      if (!absl::SimpleAtod(p, &v) || v < 0 || v > 1) {
        std::cerr << "fedtune-site synth: --prevalence takes numbers in [0, 1] separated by commas\n";
        return 2;
      }
      o.prevalence.push_back(v);
    }
    o.findings.resize(o.prevalence.size());
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
