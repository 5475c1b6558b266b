// Synthetic hospitals: chest-radiograph-like DICOM files with planted PHI and
// learnable findings, plus a VinDr-layout labels file. The demo, tests and
// benchmarks use it; no real patient data is needed anywhere in fedtune.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "site-agent/ingest/synth_text.h"

namespace fedtune::ingest {

// How a site's scanner stores its images.
struct ScannerStyle {
  std::string modality = "DX";    // "CR" or "DX"
  bool monochrome1 = false;       // stored inverted
  int bits_stored = 12;           // 10..16
  double rescale_slope = 1;       // modality = stored * slope + intercept
  double rescale_intercept = 0;
  bool window = true;             // write WindowCenter/Width
  std::string compression = "none";  // "none", "rle" or "jpegls"
};

// Findings the generator can draw, each with a visible sign a model can learn:
// "Cardiomegaly" (wide heart), "Pleural effusion" (fluid level at a lung
// base), "Nodule/Mass" (round opacity in a lung), "Pneumothorax" (dark
// rim without lung markings at an apex).
std::vector<std::string> SynthFindings();

struct SynthOptions {
  std::string site = "site";      // names files and identifiers
  int patients = 20;
  int max_studies_per_patient = 2;
  int image_size = 512;           // square, pixels
  std::vector<std::string> findings = SynthFindings();
  std::vector<double> prevalence = {0.3, 0.25, 0.2, 0.15};  // per finding
  ScannerStyle style;
  uint64_t seed = 1;
  int raters = 3;                 // radiologist rows per image in the labels file
  double rater_miss_rate = 0.1;   // chance one radiologist misses a true finding
  // Key the labels file by SOPInstanceUID (column "sop_instance_uid"), as a
  // RIS export for images received over the network would be, instead of by
  // file name (column "image_id").
  bool labels_by_sop_instance_uid = false;
  // Burned-in text, for measuring its detection: the share of images with
  // a name, a birth date and/or a record number printed into the pixels
  // (1-3 lines in one corner; a DejaVu font, regular, bold, mono or serif;
  // letters 2.5-5 % of the image high; grey levels from dim to white), and
  // whether every image carries a laterality marker (L or R, sometimes with
  // PA, AP or PORTABLE), as radiographs do, in another corner. Drawn from a
  // random stream of their own: the images are otherwise the same as
  // without text. Needs Debian's fonts-dejavu-core (font_dir).
  double burned_in_fraction = 0;
  bool markers = false;
  std::string font_dir = kDejaVuFontDir;
};

// One line of text printed into a synthetic image.
struct BurnedInText {
  std::string image_id;  // the file's stem
  std::string kind;      // "name", "date", "record_number" or "marker"
  PixelBox box;          // where its glyphs lie, in the image's pixels
};

struct SynthResult {
  int images = 0;
  std::string labels_csv;         // path of the VinDr-layout labels file
  std::vector<std::string> files; // written DICOM paths
  // Every line of text printed, also written to <dir>/burned_in.csv
  // (image_id,kind,x,y,width,height) when there is any.
  std::vector<BurnedInText> burned_in;
};

// Writes <dir>/<site>_NNNNN.dcm files and <dir>/labels.csv. INVALID_ARGUMENT
// on inconsistent options.
absl::StatusOr<SynthResult> WriteSyntheticSite(const SynthOptions& options, const std::string& dir);

// Every identifying value the generator plants for `site` (tests scan
// de-identified output for each of them).
std::vector<std::string> PlantedPhi(const std::string& site);

}  // namespace fedtune::ingest
