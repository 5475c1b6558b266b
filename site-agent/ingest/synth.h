// Synthetic hospitals: chest-radiograph-like DICOM files with planted PHI and
// learnable findings, plus a VinDr-layout labels file. The demo, tests and
// benchmarks use it; no real patient data is needed anywhere in fedtune.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
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

// The scanner styles `fedtune-site synth --style` names: "plain" (DX,
// MONOCHROME2, 12 bit), "mono1-rle" (MONOCHROME1, 10 bit, RLE),
// "inverse-jpegls" (16 bit, negative rescale slope, JPEG-LS) and "cr" (CR,
// 14 bit, rescaled, no window). INVALID_ARGUMENT for another name.
absl::StatusOr<ScannerStyle> ScannerStyleNamed(std::string_view name);

// Findings the generator can draw, each with a visible sign a model can learn:
// "Cardiomegaly" (wide heart), "Pleural effusion" (fluid level at a lung
// base), "Nodule/Mass" (round opacity in a lung), "Pneumothorax" (dark
// rim without lung markings at an apex). The default set.
std::vector<std::string> SynthFindings();

// The 17 local findings of VinDr-CXR the generator can draw (the first four
// are SynthFindings()), in order of how hard their sign is to see:
//   plain     Cardiomegaly, Pleural effusion, Nodule/Mass, Pneumothorax;
//   moderate  Aortic enlargement (a bulging aortic knob), Enlarged PA (a
//             bulging left hilum), Consolidation (a dense lower-lobe patch),
//             Lung Opacity (a broad faint haze), Pleural thickening (a dense
//             band along a lung's outer edge), Mediastinal shift (the
//             mediastinum pushed to one side), Atelectasis (a thin plate-like
//             band with volume loss);
//   subtle    Pulmonary fibrosis (coarse lines at the apices), ILD (a fine
//             reticular texture at the bases), Infiltration (faint scattered
//             patches), Other lesion (one small blob anywhere), Calcification
//             (a few tiny bright dots), Rib fracture (a small step in one rib).
std::vector<std::string> VinDrSynthFindings();

// A VinDr-like image-level prevalence (any of three radiologists) for each
// finding of VinDrSynthFindings(): of the order of the public training
// labels, from 14 % (Aortic enlargement) down to 1 % (Pneumothorax, Rib
// fracture). NaN for a name not in the catalogue.
double VinDrLikePrevalence(std::string_view finding);

// How one site's images differ from another's beyond the scanner's storage
// (ScannerStyle): contrast (a gamma on the attenuation map, 1 = none), extra
// quantum noise (standard deviation, 0 = none) and resolution (a box blur of
// this radius in pixels of a 256 px image, 0 = none).
struct SiteShift {
  double gamma = 1.0;
  double noise = 0.0;
  double blur = 0.0;
};

struct SynthOptions {
  std::string site = "site";      // names files and identifiers
  int patients = 20;
  int max_studies_per_patient = 2;
  int image_size = 512;           // square, pixels
  // Any findings of VinDrSynthFindings(), each once, with one prevalence
  // each. Findings that go together clinically are drawn together more
  // often (SynthCoOccurrence) when both are asked for.
  std::vector<std::string> findings = SynthFindings();
  std::vector<double> prevalence = {0.3, 0.25, 0.2, 0.15};  // per finding
  bool co_occurrence = false;
  SiteShift shift;
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

// Pairs of findings drawn together more often than chance: when `first` is
// present, `second` is drawn again with `lift` times its prevalence (at most
// 1). E.g. Cardiomegaly with Pleural effusion, Pulmonary fibrosis with ILD.
struct CoOccurrence {
  std::string first, second;
  double lift;
};
std::vector<CoOccurrence> SynthCoOccurrence();

// One synthetic chest (attenuation in [0, 1], n x n, row-major) with the
// given findings of VinDrSynthFindings() present: what WriteSyntheticSite
// stores, before the scanner's encoding. The same seed gives the same
// anatomy, so two calls that differ in one finding differ only by its sign.
std::vector<double> RenderSyntheticChest(int n, const std::vector<std::string>& present, uint64_t seed,
                                         const SiteShift& shift = {});

// Writes <dir>/<site>_NNNNN.dcm files and <dir>/labels.csv. INVALID_ARGUMENT
// on inconsistent options.
absl::StatusOr<SynthResult> WriteSyntheticSite(const SynthOptions& options, const std::string& dir);

// Every identifying value the generator plants for `site` (tests scan
// de-identified output for each of them).
std::vector<std::string> PlantedPhi(const std::string& site);

}  // namespace fedtune::ingest
