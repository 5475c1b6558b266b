// Burned-in text: names, dates and record numbers a modality or a
// workstation printed into the pixels, where no header de-identification
// reaches. Radiographs often carry them, and BurnedInAnnotation, which
// would say so, is optional for CR and DX. Ingest reads the decoded pixels
// of every image whose header does not say NO with Tesseract (Debian's
// libtesseract with tesseract-ocr-eng) and, by [deid] burned_in, quarantines
// the image (reason burned_in_text) or blacks out the text it found in the
// cache and the de-identified copy. Laterality and view markers (L, R, PA,
// AP, ...) are expected on radiographs and are on an allow-list.
//
// What was read is never logged, stored or returned: only where it was.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "site-agent/ingest/pixels.h"
#include "site-agent/ingest/synth_text.h"

class DcmDataset;  // DCMTK

namespace fedtune::ingest {

enum class BurnedInMode {
  kOff,         // pixels are not read (BurnedInAnnotation YES is still quarantined)
  kQuarantine,  // an image with text is quarantined (burned_in_text)
  kRedact,      // the text found is blacked out; the image is kept
};

// "off", "quarantine", "redact"; parsing is case-sensitive.
std::string_view BurnedInModeName(BurnedInMode mode);
absl::StatusOr<BurnedInMode> ParseBurnedInMode(std::string_view name);

// Markers a chest radiograph is expected to carry, matched on the word in
// upper case with everything but letters and digits removed.
std::vector<std::string> DefaultAllowedMarkers();

struct BurnedInOptions {
  BurnedInMode mode = BurnedInMode::kQuarantine;
  std::vector<std::string> allowed_markers = DefaultAllowedMarkers();
  // A word Tesseract is less sure of (0-100) is taken for texture.
  int min_confidence = 50;
  // Where eng.traineddata lies; empty: Tesseract's own default
  // (/usr/share/tesseract-ocr/5/tessdata on Debian, or TESSDATA_PREFIX).
  std::string tessdata_dir;
};

struct TextFound {
  std::vector<PixelBox> text;  // words not on the allow-list, in the image's pixels
  int markers = 0;             // allowed words seen
};

// Reads images with a pool of Tesseract engines (one per concurrent
// caller, created on demand): Find is thread-safe.
class TextDetector {
 public:
  // FAILED_PRECONDITION naming the package when the English model is absent.
  static absl::StatusOr<std::unique_ptr<TextDetector>> Open(const BurnedInOptions& options);
  ~TextDetector();
  TextDetector(const TextDetector&) = delete;
  TextDetector& operator=(const TextDetector&) = delete;

  absl::StatusOr<TextFound> Find(const GrayImage& image);

 private:
  struct State;
  explicit TextDetector(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Every box grown by `margin` pixels on each side, clipped to width x height.
std::vector<PixelBox> Grow(const std::vector<PixelBox>& boxes, int margin, int width, int height);

// How far beyond the detected letters redaction blacks out: a 128th of the
// longer side (8 pixels at 1024), at least 2.
int RedactionMargin(int width, int height);

// Sets the pixels of `boxes` to black (0) in a presentation image.
void BlackOut(GrayImage& image, const std::vector<PixelBox>& boxes);

// Blacks out `boxes` in every frame of the dataset's uncompressed pixel data
// (what DecodeGray leaves in memory), with the stored value of the darkest
// pixel of `shown` (frame 0 as presented), so the box shows as dark as the
// darkest part of the image (black or nearly: the air around the body)
// under any LUT and photometric interpretation; drops compressed
// representations.
// `shown` must be the decoded frame 0 of this dataset.
absl::Status BlackOutStored(DcmDataset& dataset, const GrayImage& shown, const std::vector<PixelBox>& boxes);

// Records in the dataset that its burned-in text was removed (PS3.15 Clean
// Pixel Data Option): BurnedInAnnotation NO and code 113101 added to
// DeidentificationMethodCodeSequence.
absl::Status MarkPixelsCleaned(DcmDataset& dataset);

}  // namespace fedtune::ingest
