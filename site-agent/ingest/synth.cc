#include "site-agent/ingest/synth.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpls/djencode.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/core/status.h"
#include "site-agent/ingest/pixels.h"

namespace fedtune::ingest {
namespace {

void RegisterEncoders() {
  static std::once_flag once;
  std::call_once(once, [] {
    RegisterDecoders();  // also quiets DCMTK's logging
    DcmRLEEncoderRegistration::registerCodecs();
    DJLSEncoderRegistration::registerCodecs();
  });
}

// Soft-edged ellipse mask value in [0, 1] at (x, y).
double Ellipse(double x, double y, double cx, double cy, double rx, double ry) {
  const double d = std::hypot((x - cx) / rx, (y - cy) / ry);
  return std::clamp((1.0 - d) * 8.0, 0.0, 1.0);
}

// A chest-radiograph-like attenuation map in [0, 1] (1 = dense, shown white).
std::vector<double> DrawChest(int n, const std::vector<bool>& has, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  std::normal_distribution<double> noise(0, 0.015);
  const double jitter = 0.02 * (u(rng) - 0.5);
  const bool cardio = has[0], effusion = has[1], nodule = has[2], ptx = has[3];
  const double heart_rx = cardio ? 0.19 : 0.12;
  const int eff_side = u(rng) < 0.5 ? -1 : 1;
  const double nod_x = 0.5 + (u(rng) < 0.5 ? -1 : 1) * (0.13 + 0.08 * u(rng)), nod_y = 0.35 + 0.25 * u(rng);
  const int ptx_side = u(rng) < 0.5 ? -1 : 1;
  std::vector<double> img(static_cast<size_t>(n) * n);
  for (int py = 0; py < n; ++py) {
    const double y = (py + 0.5) / n;
    for (int px = 0; px < n; ++px) {
      const double x = (px + 0.5) / n;
      double v = 0.05;                                                   // air
      v += 0.55 * Ellipse(x, y, 0.5 + jitter, 0.52, 0.40, 0.46);        // body
      const double lung_l = Ellipse(x, y, 0.33 + jitter, 0.45, 0.13, 0.30);
      const double lung_r = Ellipse(x, y, 0.67 + jitter, 0.45, 0.13, 0.30);
      v -= 0.35 * std::max(lung_l, lung_r);                              // aerated lungs
      v += 0.25 * std::clamp(1.0 - std::abs(x - 0.5 - jitter) / 0.03, 0.0, 1.0) * (y > 0.1);  // spine
      // Ribs: faint arcs across the lungs.
      v += 0.05 * std::max(lung_l, lung_r) * (std::sin((y + 0.04 * std::cos(6 * x)) * 60) > 0.7);
      v += 0.30 * Ellipse(x, y, 0.52 + jitter, 0.62, heart_rx, 0.14);    // heart
      if (effusion) {
        const double base = Ellipse(x, y, 0.5 + eff_side * 0.17 + jitter, 0.72, 0.13, 0.07);
        v += 0.35 * base * (y > 0.66);
      }
      if (nodule) v += 0.40 * Ellipse(x, y, nod_x, nod_y, 0.07, 0.07);
      if (ptx) {
        const double lung = ptx_side < 0 ? lung_l : lung_r;
        const double rim = Ellipse(x, y, 0.5 + ptx_side * 0.2 + jitter, 0.32, 0.10, 0.18);
        v -= 0.45 * rim * lung;
      }
      img[static_cast<size_t>(py) * n + px] = std::clamp(v + noise(rng), 0.0, 1.0);
    }
  }
  return img;
}

// The signs of the findings beyond the first four (VinDrSynthFindings()
// order, index 4 on), added to a drawn chest. Every sign's place and shape
// is drawn whether or not it is present, so the anatomy and the other signs
// do not depend on which are.
void DrawFurtherFindings(std::vector<double>& img, int n, const std::vector<bool>& has, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> u(0, 1);
  auto side = [&] { return u(rng) < 0.5 ? -1.0 : 1.0; };
  struct Spot {
    double x, y;
  };
  // A point inside one lung (upper/lower zone bounds in y).
  auto in_lung = [&](double y_lo, double y_hi) {
    const double s = side();
    return Spot{0.5 + s * 0.17 + 0.07 * (2 * u(rng) - 1), y_lo + (y_hi - y_lo) * u(rng)};
  };
  const double cons_side = side(), cons_y = 0.55 + 0.08 * u(rng);
  const double opac_side = side(), opac_y = 0.40 + 0.10 * u(rng);
  const double thick_side = side();
  const double shift_side = side();
  const double atel_side = side(), atel_y = 0.56 + 0.05 * u(rng);
  const double fib_angle = u(rng) * 3.14159, ild_phase = u(rng) * 6.283;
  std::vector<Spot> patches(5), dots(4);
  for (auto& p : patches) p = in_lung(0.3, 0.68);
  for (auto& p : dots) p = in_lung(0.25, 0.65);
  const Spot lesion{0.2 + 0.6 * u(rng), 0.2 + 0.55 * u(rng)};
  const Spot fracture = in_lung(0.25, 0.6);
  auto present = [&](size_t k) { return k < has.size() && has[k]; };
  for (int py = 0; py < n; ++py) {
    const double y = (py + 0.5) / n;
    for (int px = 0; px < n; ++px) {
      const double x = (px + 0.5) / n;
      const double lung_l = Ellipse(x, y, 0.33, 0.45, 0.13, 0.30), lung_r = Ellipse(x, y, 0.67, 0.45, 0.13, 0.30);
      const double lungs = std::max(lung_l, lung_r);
      double v = 0;
      if (present(4)) v += 0.22 * Ellipse(x, y, 0.44, 0.28, 0.055, 0.05);                        // Aortic enlargement
      if (present(5)) v += 0.22 * Ellipse(x, y, 0.42, 0.44, 0.04, 0.05);                         // Enlarged PA
      if (present(6)) v += 0.28 * Ellipse(x, y, 0.5 + cons_side * 0.17, cons_y, 0.08, 0.07);     // Consolidation
      if (present(7)) v += 0.13 * Ellipse(x, y, 0.5 + opac_side * 0.17, opac_y, 0.11, 0.15);     // Lung Opacity
      if (present(8)) {                                                                           // Pleural thickening
        const double cx = 0.5 + thick_side * 0.17;
        const double ring = Ellipse(x, y, cx, 0.45, 0.135, 0.30) - Ellipse(x, y, cx, 0.45, 0.115, 0.28);
        if ((x - cx) * thick_side > 0) v += 0.25 * std::max(0.0, ring);
      }
      if (present(9)) v += 0.18 * Ellipse(x, y, 0.5 + shift_side * 0.08, 0.5, 0.05, 0.30);       // Mediastinal shift
      if (present(10)) {                                                                          // Atelectasis
        const double cx = 0.5 + atel_side * 0.17;
        v += 0.30 * Ellipse(x, y, cx, atel_y, 0.10, 0.015) + 0.10 * Ellipse(x, y, cx, 0.72, 0.13, 0.06);
      }
      if (present(11) && y < 0.4) {                                                               // Pulmonary fibrosis
        const double t = x * std::cos(fib_angle) + y * std::sin(fib_angle);
        v += 0.12 * lungs * (std::sin(t * 70) > 0.85);
      }
      if (present(12) && y > 0.5) {                                                               // ILD
        v += 0.07 * lungs * (std::sin(x * 120 + ild_phase) > 0.9 || std::sin(y * 120 + ild_phase) > 0.9);
      }
      if (present(13)) {                                                                          // Infiltration
        for (const auto& p : patches) v += 0.10 * Ellipse(x, y, p.x, p.y, 0.03, 0.03);
      }
      if (present(14)) v += 0.22 * Ellipse(x, y, lesion.x, lesion.y, 0.03, 0.03);                // Other lesion
      if (present(15)) {                                                                          // Calcification
        for (const auto& p : dots) v += 0.45 * Ellipse(x, y, p.x, p.y, 0.01, 0.01);
      }
      if (present(16)) {                                                                          // Rib fracture
        v -= 0.12 * Ellipse(x, y, fracture.x, fracture.y, 0.03, 0.006);
        v += 0.12 * Ellipse(x, y, fracture.x + 0.03, fracture.y + 0.006, 0.012, 0.012);
      }
      double& pixel = img[static_cast<size_t>(py) * n + px];
      pixel = std::clamp(pixel + v, 0.0, 1.0);
    }
  }
}

// Contrast, resolution and noise of one site (SiteShift).
void ApplyShift(std::vector<double>& img, int n, const SiteShift& shift, std::mt19937_64& rng) {
  if (shift.gamma != 1.0) {
    for (double& v : img) v = std::pow(v, shift.gamma);
  }
  const int r = static_cast<int>(std::lround(shift.blur * n / 256.0));
  if (r > 0) {
    std::vector<double> tmp(img.size());
    for (int pass = 0; pass < 2; ++pass) {  // rows, then columns
      const std::vector<double>& src = pass == 0 ? img : tmp;
      std::vector<double>& dst = pass == 0 ? tmp : img;
      for (int a = 0; a < n; ++a) {
        for (int b = 0; b < n; ++b) {
          double sum = 0;
          int count = 0;
          for (int d = std::max(0, b - r); d <= std::min(n - 1, b + r); ++d, ++count) {
            sum += pass == 0 ? src[static_cast<size_t>(a) * n + d] : src[static_cast<size_t>(d) * n + a];
          }
          (pass == 0 ? dst[static_cast<size_t>(a) * n + b] : dst[static_cast<size_t>(b) * n + a]) = sum / count;
        }
      }
    }
  }
  if (shift.noise > 0) {
    std::normal_distribution<double> noise(0, shift.noise);
    for (double& v : img) v = std::clamp(v + noise(rng), 0.0, 1.0);
  }
}

// Each image's own streams for the further signs and the site's shift, so
// that the default four findings' pictures are what they always were.
std::mt19937_64 ImageStream(uint64_t seed, int64_t image, uint64_t salt) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(image),
                    static_cast<uint32_t>(salt)};
  return std::mt19937_64(seq);
}

// Catalogue indices of the present findings, as DrawChest (first four) and
// DrawFurtherFindings (the rest) take them.
std::vector<bool> CatalogueFlags(const std::vector<std::string>& names, const std::vector<bool>& has) {
  const std::vector<std::string> all = VinDrSynthFindings();
  std::vector<bool> flags(all.size(), false);
  for (size_t k = 0; k < names.size(); ++k) {
    if (!has[k]) continue;
    const auto it = std::find(all.begin(), all.end(), names[k]);
    if (it != all.end()) flags[static_cast<size_t>(it - all.begin())] = true;
  }
  return flags;
}

std::vector<double> Render(int n, const std::vector<bool>& flags, std::mt19937_64& rng, uint64_t seed, int64_t image,
                           const SiteShift& shift) {
  std::vector<bool> first(flags.begin(), flags.begin() + 4);
  std::vector<double> picture = DrawChest(n, first, rng);
  if (std::any_of(flags.begin() + 4, flags.end(), [](bool b) { return b; })) {
    std::mt19937_64 signs = ImageStream(seed, image, 0x5167);
    DrawFurtherFindings(picture, n, flags, signs);
  }
  if (shift.gamma != 1.0 || shift.blur > 0 || shift.noise > 0) {
    std::mt19937_64 noise = ImageStream(seed, image, 0x5417);
    ApplyShift(picture, n, shift, noise);
  }
  return picture;
}

// Where the text of one corner goes: 0 top-left, 1 top-right, 2 bottom-left,
// 3 bottom-right.
struct Corner {
  int index;
  bool right() const { return index % 2 == 1; }
  bool bottom() const { return index >= 2; }
};

// Prints `lines` into one corner of the picture, top to bottom, each line's
// left (or right) edge at the corner's margin; records each line's box.
absl::Status PrintLines(TextStamper& stamper, std::vector<double>& picture, int n, const std::string& font,
                        int pixel_height, double value, Corner corner, int margin,
                        const std::vector<std::pair<std::string, std::string>>& lines, const std::string& image_id,
                        std::vector<BurnedInText>& out) {
  const int line_step = pixel_height * 13 / 10;
  const int block = line_step * static_cast<int>(lines.size());
  int y = corner.bottom() ? n - margin - block : margin;
  for (const auto& [kind, text] : lines) {
    ASSIGN_OR_RETURN(PixelBox size, stamper.Measure(font, pixel_height, text));
    const int x = corner.right() ? std::max(0, n - margin - size.width - size.x) : margin;
    ASSIGN_OR_RETURN(PixelBox box, stamper.Stamp(picture, n, font, pixel_height, text, x, y, value));
    if (box.width > 0) out.push_back(BurnedInText{image_id, kind, box});
    y += line_step;
  }
  return absl::OkStatus();
}

// A patient's name, birth date and record number as modalities print them,
// in one of several formats each.
std::vector<std::pair<std::string, std::string>> PhiLines(std::mt19937_64& rng) {
  static const char* kSurnames[] = {"DOE", "SMITH", "NGUYEN", "GARCIA", "MUELLER", "OKAFOR", "ROSSI", "KOWALSKI",
                                    "TANAKA", "JOHANSSON", "MARTIN", "BROWN"};
  static const char* kGiven[] = {"JANE", "JOHN", "MARIA", "AHMED", "LI", "ANNA", "PETER", "GRACE", "OMAR", "ELENA"};
  static const char* kMonths[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
  auto pick = [&](int count) { return static_cast<int>(rng() % static_cast<uint64_t>(count)); };
  const std::string surname = kSurnames[pick(12)], given = kGiven[pick(10)];
  const int year = 1930 + pick(80), month = 1 + pick(12), day = 1 + pick(28);
  const int mrn = 1000000 + pick(8999999);
  std::string name, date, record;
  switch (pick(3)) {
    case 0: name = absl::StrCat(surname, ", ", given); break;
    case 1: name = absl::StrCat(surname, "^", given); break;
    default: name = absl::StrCat(given, " ", surname); break;
  }
  switch (pick(4)) {
    case 0: date = absl::StrFormat("%02d/%02d/%04d", month, day, year); break;
    case 1: date = absl::StrFormat("DOB %04d-%02d-%02d", year, month, day); break;
    case 2: date = absl::StrFormat("%02d-%s-%04d", day, kMonths[month - 1], year); break;
    default: date = absl::StrFormat("%04d%02d%02d", year, month, day); break;
  }
  switch (pick(3)) {
    case 0: record = absl::StrCat("MRN ", mrn); break;
    case 1: record = absl::StrCat("ID: ", mrn); break;
    default: record = absl::StrCat("#A", mrn); break;
  }
  std::vector<std::pair<std::string, std::string>> all = {{"name", name}, {"date", date}, {"record_number", record}};
  // One to three of them, in this order.
  const int keep = 1 + pick(3);
  std::vector<std::pair<std::string, std::string>> lines;
  std::vector<int> order = {0, 1, 2};
  std::shuffle(order.begin(), order.end(), rng);
  order.resize(static_cast<size_t>(keep));
  std::sort(order.begin(), order.end());
  for (int i : order) lines.push_back(all[static_cast<size_t>(i)]);
  return lines;
}

// Prints the text of one image (markers, PHI) as the options ask.
absl::Status PrintText(TextStamper& stamper, const SynthOptions& o, std::mt19937_64& rng, std::vector<double>& picture,
                       int n, const std::string& image_id, std::vector<BurnedInText>& out) {
  static const char* kFonts[] = {"DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf",
                                 "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"};
  std::uniform_real_distribution<double> u(0, 1);
  const bool phi = u(rng) < o.burned_in_fraction;
  const Corner phi_corner{static_cast<int>(rng() % 4)};
  if (o.markers) {
    // Laterality at the top, in a corner the PHI does not use.
    const Corner corner{phi_corner.index == 0 ? 1 : phi_corner.index == 1 ? 0 : static_cast<int>(rng() % 2)};
    std::vector<std::pair<std::string, std::string>> lines = {{"marker", u(rng) < 0.5 ? "L" : "R"}};
    const double view = u(rng);
    if (view < 0.2) lines.push_back({"marker", "AP"});
    else if (view < 0.35) lines.push_back({"marker", "PA"});
    else if (view < 0.45) lines.push_back({"marker", "PORTABLE"});
    const int px = std::max(8, static_cast<int>(n * (0.04 + 0.03 * u(rng))));
    RETURN_IF_ERROR(PrintLines(stamper, picture, n, absl::StrCat(o.font_dir, "/", kFonts[rng() % 2]), px,
                               0.85 + 0.15 * u(rng), corner, static_cast<int>(n * (0.02 + 0.03 * u(rng))), lines,
                               image_id, out));
  }
  if (phi) {
    const int px = std::max(8, static_cast<int>(n * (0.025 + 0.025 * u(rng))));
    const std::string font = absl::StrCat(o.font_dir, "/", kFonts[rng() % 6]);
    RETURN_IF_ERROR(PrintLines(stamper, picture, n, font, px, 0.55 + 0.45 * u(rng), phi_corner,
                               static_cast<int>(n * (0.015 + 0.03 * u(rng))), PhiLines(rng), image_id, out));
  }
  return absl::OkStatus();
}

absl::Status Put(DcmItem& item, const DcmTagKey& tag, const std::string& value) {
  if (item.putAndInsertString(tag, value.c_str()).bad()) {
    return absl::InternalError(absl::StrCat("cannot write ", tag.toString().c_str()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ScannerStyle> ScannerStyleNamed(std::string_view name) {
  ScannerStyle style;
  if (name == "plain") return style;
  if (name == "mono1-rle") {
    style.monochrome1 = true;
    style.bits_stored = 10;
    style.compression = "rle";
  } else if (name == "inverse-jpegls") {
    style.bits_stored = 16;
    style.rescale_slope = -1;
    style.rescale_intercept = 65535;
    style.compression = "jpegls";
  } else if (name == "cr") {
    style.modality = "CR";
    style.bits_stored = 14;
    style.rescale_slope = 2;
    style.rescale_intercept = -1000;
    style.window = false;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown scanner style \"", std::string(name),
                                                   "\" (plain, mono1-rle, inverse-jpegls or cr)"));
  }
  return style;
}

std::vector<std::string> SynthFindings() { return {"Cardiomegaly", "Pleural effusion", "Nodule/Mass", "Pneumothorax"}; }

std::vector<std::string> VinDrSynthFindings() {
  return {"Cardiomegaly",       "Pleural effusion", "Nodule/Mass",   "Pneumothorax",  "Aortic enlargement",
          "Enlarged PA",        "Consolidation",    "Lung Opacity",  "Pleural thickening", "Mediastinal shift",
          "Atelectasis",        "Pulmonary fibrosis", "ILD",         "Infiltration",  "Other lesion",
          "Calcification",      "Rib fracture"};
}

double VinDrLikePrevalence(std::string_view finding) {
  static const std::pair<const char*, double> kPrevalence[] = {
      {"Cardiomegaly", 0.12},       {"Pleural effusion", 0.05}, {"Nodule/Mass", 0.06},   {"Pneumothorax", 0.01},
      {"Aortic enlargement", 0.14}, {"Enlarged PA", 0.01},      {"Consolidation", 0.02}, {"Lung Opacity", 0.06},
      {"Pleural thickening", 0.09}, {"Mediastinal shift", 0.01}, {"Atelectasis", 0.02},  {"Pulmonary fibrosis", 0.08},
      {"ILD", 0.025},               {"Infiltration", 0.03},     {"Other lesion", 0.05},  {"Calcification", 0.03},
      {"Rib fracture", 0.01}};
  for (const auto& [name, p] : kPrevalence) {
    if (finding == name) return p;
  }
  return std::nan("");
}

std::vector<CoOccurrence> SynthCoOccurrence() {
  return {{"Cardiomegaly", "Pleural effusion", 3},      {"Cardiomegaly", "Enlarged PA", 3},
          {"Cardiomegaly", "Aortic enlargement", 2},    {"Aortic enlargement", "Calcification", 3},
          {"Pulmonary fibrosis", "ILD", 4},             {"Pulmonary fibrosis", "Pleural thickening", 3},
          {"Consolidation", "Lung Opacity", 4},         {"Infiltration", "Lung Opacity", 3},
          {"Atelectasis", "Pleural effusion", 3},       {"Nodule/Mass", "Other lesion", 2}};
}

std::vector<double> RenderSyntheticChest(int n, const std::vector<std::string>& present, uint64_t seed,
                                         const SiteShift& shift) {
  std::mt19937_64 rng(seed);
  return Render(n, CatalogueFlags(present, std::vector<bool>(present.size(), true)), rng, seed, 0, shift);
}

std::vector<std::string> PlantedPhi(const std::string& site) {
  return {absl::StrCat("DOE^", site), absl::StrCat("MRN-", site), absl::StrCat(site, " GENERAL HOSPITAL"),
          "12 ELM STREET SPRINGFIELD", "HOUSE^GREGORY", "TECH^TERRY", absl::StrCat("ACC-", site),
          absl::StrCat("ALT-", site), absl::StrCat("PRIVATE-", site), "OVERLAY-PHI", "19610203"};
}

absl::StatusOr<SynthResult> WriteSyntheticSite(const SynthOptions& o, const std::string& dir) {
  const std::vector<std::string> catalogue = VinDrSynthFindings();
  if (o.findings.size() != o.prevalence.size() || o.findings.empty()) {
    return absl::InvalidArgumentError("synth: one prevalence per finding");
  }
  for (size_t k = 0; k < o.findings.size(); ++k) {
    if (std::find(catalogue.begin(), catalogue.end(), o.findings[k]) == catalogue.end()) {
      return absl::InvalidArgumentError(absl::StrCat("synth: no sign for \"", o.findings[k], "\"; the findings are ",
                                                     absl::StrJoin(catalogue, ", ")));
    }
    if (std::find(o.findings.begin(), o.findings.begin() + static_cast<long>(k), o.findings[k]) !=
        o.findings.begin() + static_cast<long>(k)) {
      return absl::InvalidArgumentError(absl::StrCat("synth: \"", o.findings[k], "\" is named twice"));
    }
    if (!(o.prevalence[k] >= 0 && o.prevalence[k] <= 1)) {
      return absl::InvalidArgumentError("synth: prevalences lie in [0, 1]");
    }
  }
  if (!(o.shift.gamma > 0) || o.shift.noise < 0 || o.shift.blur < 0) {
    return absl::InvalidArgumentError("synth: a positive gamma, and noise and blur of at least 0");
  }
  if (o.burned_in_fraction < 0 || o.burned_in_fraction > 1) {
    return absl::InvalidArgumentError("synth: burned_in_fraction must be in [0, 1]");
  }
  if (o.patients < 1 || o.image_size < 64 || o.style.bits_stored < 10 || o.style.bits_stored > 16 ||
      o.max_studies_per_patient < 1 || o.raters < 1 || o.style.rescale_slope == 0) {
    return absl::InvalidArgumentError("synth: patients >= 1, image_size >= 64, bits_stored in 10..16 and a non-zero rescale slope needed");
  }
  E_TransferSyntax xfer = EXS_LittleEndianExplicit;
  if (o.style.compression == "rle") {
    xfer = EXS_RLELossless;
  } else if (o.style.compression == "jpegls") {
    xfer = EXS_JPEGLSLossless;
  } else if (o.style.compression != "none") {
    return absl::InvalidArgumentError("synth: compression must be none, rle or jpegls");
  }
  RegisterEncoders();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));

  std::mt19937_64 rng(o.seed);
  // Text has its own stream, so the pictures do not depend on it.
  std::mt19937_64 text_rng(o.seed ^ 0x9e3779b97f4a7c15ULL);
  std::unique_ptr<TextStamper> stamper;
  if (o.burned_in_fraction > 0 || o.markers) {
    ASSIGN_OR_RETURN(stamper, TextStamper::Open());
  }
  std::uniform_real_distribution<double> u(0, 1);
  const std::vector<std::string> phi = PlantedPhi(o.site);
  const int max_stored = (1 << o.style.bits_stored) - 1;
  SynthResult result;
  std::string csv = absl::StrCat(o.labels_by_sop_instance_uid ? "sop_instance_uid" : "image_id", ",rad_id,",
                                 absl::StrJoin(o.findings, ","), "\n");
  char uid[100];
  for (int p = 0; p < o.patients; ++p) {
    const std::string patient_id = absl::StrFormat("MRN-%s-%05d", o.site, p);
    const int studies = 1 + static_cast<int>(u(rng) * o.max_studies_per_patient);
    for (int s = 0; s < studies; ++s) {
      std::vector<bool> has(o.findings.size(), false);
      for (size_t k = 0; k < o.findings.size(); ++k) has[k] = u(rng) < o.prevalence[k];
      if (o.co_occurrence) {
        std::mt19937_64 co = ImageStream(o.seed, result.images, 0xc0);
        for (const auto& c : SynthCoOccurrence()) {
          const auto a = std::find(o.findings.begin(), o.findings.end(), c.first);
          const auto b = std::find(o.findings.begin(), o.findings.end(), c.second);
          if (a == o.findings.end() || b == o.findings.end()) continue;
          const size_t ia = static_cast<size_t>(a - o.findings.begin()), ib = static_cast<size_t>(b - o.findings.begin());
          if (has[ia] && !has[ib]) has[ib] = u(co) < std::min(1.0, c.lift * o.prevalence[ib]);
        }
      }
      std::vector<double> picture =
          Render(o.image_size, CatalogueFlags(o.findings, has), rng, o.seed, result.images, o.shift);
      const std::string image_id = absl::StrFormat("%s_%05d", o.site, result.images);
      if (stamper) {
        RETURN_IF_ERROR(PrintText(*stamper, o, text_rng, picture, o.image_size, image_id, result.burned_in));
      }
      // Modality values span [m_lo, m_hi], the image of stored values 0..max
      // under the rescale; denser tissue shows whiter either way.
      const double a = o.style.rescale_intercept, b = a + max_stored * o.style.rescale_slope;
      const double m_lo = std::min(a, b), m_hi = std::max(a, b);
      std::vector<Uint16> stored(picture.size());
      for (size_t i = 0; i < picture.size(); ++i) {
        const double shown = o.style.monochrome1 ? 1 - picture[i] : picture[i];
        const double modality = m_lo + shown * (m_hi - m_lo);
        const double raw = (modality - o.style.rescale_intercept) / o.style.rescale_slope;
        stored[i] = static_cast<Uint16>(std::clamp(std::lround(raw), 0L, static_cast<long>(max_stored)));
      }
      DcmFileFormat file;
      DcmDataset& ds = *file.getDataset();
      const std::string sop_class = o.style.modality == "CR" ? UID_ComputedRadiographyImageStorage
                                                             : UID_DigitalXRayImageStorageForPresentation;
      RETURN_IF_ERROR(Put(ds, DCM_SOPClassUID, sop_class));
      const std::string sop_instance = dcmGenerateUniqueIdentifier(uid, SITE_INSTANCE_UID_ROOT);
      RETURN_IF_ERROR(Put(ds, DCM_SOPInstanceUID, sop_instance));
      RETURN_IF_ERROR(Put(ds, DCM_StudyInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_STUDY_UID_ROOT)));
      RETURN_IF_ERROR(Put(ds, DCM_SeriesInstanceUID, dcmGenerateUniqueIdentifier(uid, SITE_SERIES_UID_ROOT)));
      RETURN_IF_ERROR(Put(ds, DCM_Modality, o.style.modality));
      RETURN_IF_ERROR(Put(ds, DCM_BodyPartExamined, "CHEST"));
      RETURN_IF_ERROR(Put(ds, DCM_ViewPosition, "PA"));
      // Planted PHI, everywhere the profile must reach.
      RETURN_IF_ERROR(Put(ds, DCM_PatientName, absl::StrCat(phi[0], "^", p)));
      RETURN_IF_ERROR(Put(ds, DCM_PatientID, patient_id));
      RETURN_IF_ERROR(Put(ds, DCM_PatientBirthDate, phi[10]));
      RETURN_IF_ERROR(Put(ds, DCM_PatientSex, p % 2 ? "F" : "M"));
      RETURN_IF_ERROR(Put(ds, DCM_PatientAddress, phi[3]));
      RETURN_IF_ERROR(Put(ds, DCM_InstitutionName, phi[2]));
      RETURN_IF_ERROR(Put(ds, DCM_ReferringPhysicianName, phi[4]));
      RETURN_IF_ERROR(Put(ds, DCM_OperatorsName, phi[5]));
      RETURN_IF_ERROR(Put(ds, DCM_AccessionNumber, absl::StrCat(phi[6], "-", result.images)));
      RETURN_IF_ERROR(Put(ds, DCM_StudyDate, absl::StrFormat("2024%02d%02d", 1 + s * 3 % 12, 1 + p % 28)));
      RETURN_IF_ERROR(Put(ds, DCM_StudyTime, "101500"));
      RETURN_IF_ERROR(Put(ds, DCM_StudyDescription, absl::StrCat("CHEST PA ", phi[0])));
      DcmItem* item = nullptr;
      if (ds.findOrCreateSequenceItem(DCM_OtherPatientIDsSequence, item, -2).good()) {
        RETURN_IF_ERROR(Put(*item, DCM_PatientID, absl::StrCat(phi[7], "-", p)));
        RETURN_IF_ERROR(Put(*item, DCM_IssuerOfPatientID, phi[2]));
      }
      RETURN_IF_ERROR(Put(ds, DcmTagKey(0x0029, 0x0010), "SYNTH SCANNER"));
      ds.putAndInsertString(DcmTag(0x0029, 0x1001, DcmVR(EVR_LO)), phi[8].c_str());
      const Uint8 overlay[16] = {'O', 'V', 'E', 'R', 'L', 'A', 'Y', '-', 'P', 'H', 'I', 0, 0, 0, 0, 0};
      ds.putAndInsertUint8Array(DcmTag(0x6000, 0x3000, DcmVR(EVR_OB)), overlay, 16);
      // Image pixel module.
      ds.putAndInsertUint16(DCM_SamplesPerPixel, 1);
      RETURN_IF_ERROR(Put(ds, DCM_PhotometricInterpretation, o.style.monochrome1 ? "MONOCHROME1" : "MONOCHROME2"));
      ds.putAndInsertUint16(DCM_Rows, static_cast<Uint16>(o.image_size));
      ds.putAndInsertUint16(DCM_Columns, static_cast<Uint16>(o.image_size));
      ds.putAndInsertUint16(DCM_BitsAllocated, 16);
      ds.putAndInsertUint16(DCM_BitsStored, static_cast<Uint16>(o.style.bits_stored));
      ds.putAndInsertUint16(DCM_HighBit, static_cast<Uint16>(o.style.bits_stored - 1));
      ds.putAndInsertUint16(DCM_PixelRepresentation, 0);
      if (o.style.rescale_slope != 1 || o.style.rescale_intercept != 0) {
        RETURN_IF_ERROR(Put(ds, DCM_RescaleSlope, absl::StrCat(o.style.rescale_slope)));
        RETURN_IF_ERROR(Put(ds, DCM_RescaleIntercept, absl::StrCat(o.style.rescale_intercept)));
        RETURN_IF_ERROR(Put(ds, DCM_RescaleType, "US"));
      }
      if (o.style.window) {
        RETURN_IF_ERROR(Put(ds, DCM_WindowCenter, absl::StrCat(std::lround((m_lo + m_hi) / 2))));
        RETURN_IF_ERROR(Put(ds, DCM_WindowWidth, absl::StrCat(std::lround(m_hi - m_lo))));
      }
      if (ds.putAndInsertUint16Array(DCM_PixelData, stored.data(), static_cast<unsigned long>(stored.size())).bad()) {
        return absl::InternalError("cannot write pixel data");
      }
      if (xfer != EXS_LittleEndianExplicit) {
        if (ds.chooseRepresentation(xfer, nullptr).bad() || !ds.canWriteXfer(xfer)) {
          return absl::InternalError(absl::StrCat("cannot compress with ", o.style.compression));
        }
      }
      const std::string path = absl::StrCat(dir, "/", image_id, ".dcm");
      if (file.saveFile(path.c_str(), xfer).bad()) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
      result.files.push_back(path);
      ++result.images;
      for (int r = 0; r < o.raters; ++r) {
        absl::StrAppend(&csv, o.labels_by_sop_instance_uid ? sop_instance : image_id, ",R", r + 1);
        for (size_t k = 0; k < o.findings.size(); ++k) {
          const bool marked = has[k] && u(rng) >= o.rater_miss_rate;
          absl::StrAppend(&csv, ",", marked ? 1 : 0);
        }
        csv += "\n";
      }
    }
  }
  result.labels_csv = dir + "/labels.csv";
  std::ofstream(result.labels_csv) << csv;
  if (!result.burned_in.empty()) {
    std::ofstream text(dir + "/burned_in.csv");
    text << "image_id,kind,x,y,width,height\n";
    for (const BurnedInText& t : result.burned_in) {
      text << t.image_id << "," << t.kind << "," << t.box.x << "," << t.box.y << "," << t.box.width << ","
           << t.box.height << "\n";
    }
    if (!text) return absl::PermissionDeniedError(absl::StrCat("cannot write ", dir, "/burned_in.csv"));
  }
  return result;
}

}  // namespace fedtune::ingest
