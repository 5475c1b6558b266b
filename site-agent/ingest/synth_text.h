// Text burned into synthetic radiographs the way a modality prints it:
// glyphs of a real TrueType font (FreeType, Debian's DejaVu fonts) blended
// into the picture, so that detection of burned-in text is measured on the
// shapes an OCR engine meets in practice, not on a bitmap font of our own.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fedtune::ingest {

// A rectangle in image pixels (x, y: top-left corner).
struct PixelBox {
  int x = 0;
  int y = 0;
  int width = 0;
  int height = 0;
};

// The folder of Debian's fonts-dejavu-core.
inline constexpr char kDejaVuFontDir[] = "/usr/share/fonts/truetype/dejavu";

// Renders text with one FreeType library and the faces it has opened (one
// per font file, opened on first use). Not thread-safe: one per thread.
class TextStamper {
 public:
  static absl::StatusOr<std::unique_ptr<TextStamper>> Open();
  ~TextStamper();
  TextStamper(const TextStamper&) = delete;
  TextStamper& operator=(const TextStamper&) = delete;

  // The box `text` would cover with its top-left corner at (0, 0), glyphs of
  // `pixel_height` pixels (the font's em), from `font_file`.
  absl::StatusOr<PixelBox> Measure(const std::string& font_file, int pixel_height, const std::string& text);
  // Blends `text` into `picture` (n x n, values in [0, 1]) with its top-left
  // corner at (x, y): each pixel moves towards `value` by the glyph's
  // coverage. Returns the box the glyphs cover, clipped to the picture.
  absl::StatusOr<PixelBox> Stamp(std::vector<double>& picture, int n, const std::string& font_file,
                                 int pixel_height, const std::string& text, int x, int y, double value);

 private:
  struct State;
  explicit TextStamper(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace fedtune::ingest
