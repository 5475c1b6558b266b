#include "site-agent/ingest/synth_text.h"

#include <ft2build.h>
#include FT_FREETYPE_H

#include <algorithm>
#include <climits>
#include <functional>
#include <map>

#include "absl/strings/str_cat.h"

namespace fedtune::ingest {

struct TextStamper::State {
  FT_Library library = nullptr;
  std::map<std::string, FT_Face> faces;

  absl::StatusOr<FT_Face> Face(const std::string& file, int pixel_height) {
    auto it = faces.find(file);
    if (it == faces.end()) {
      FT_Face face = nullptr;
      if (FT_New_Face(library, file.c_str(), 0, &face) != 0) {
        return absl::NotFoundError(absl::StrCat("cannot open the font ", file,
                                                " (Debian package fonts-dejavu-core provides the DejaVu fonts)"));
      }
      it = faces.emplace(file, face).first;
    }
    if (FT_Set_Pixel_Sizes(it->second, 0, static_cast<FT_UInt>(pixel_height)) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("font ", file, " has no size of ", pixel_height, " px"));
    }
    return it->second;
  }

  // Calls `glyph` with each rendered glyph's bitmap and its top-left corner
  // relative to the text's origin (top-left of the line box); returns the
  // union of the glyph boxes.
  absl::StatusOr<PixelBox> Layout(const std::string& file, int pixel_height, const std::string& text,
                                  const std::function<void(const FT_Bitmap&, int, int)>& glyph) {
    auto face = Face(file, pixel_height);
    if (!face.ok()) return face.status();
    const int ascender = static_cast<int>((*face)->size->metrics.ascender >> 6);
    int pen = 0;
    int x0 = INT_MAX, y0 = INT_MAX, x1 = INT_MIN, y1 = INT_MIN;
    for (unsigned char c : text) {
      if (FT_Load_Char(*face, c, FT_LOAD_RENDER) != 0) {
        return absl::InvalidArgumentError(absl::StrCat("font ", file, " cannot render character ", int{c}));
      }
      const FT_GlyphSlot g = (*face)->glyph;
      const int left = pen + g->bitmap_left, top = ascender - g->bitmap_top;
      const int w = static_cast<int>(g->bitmap.width), h = static_cast<int>(g->bitmap.rows);
      if (w > 0 && h > 0) {
        if (glyph) glyph(g->bitmap, left, top);
        x0 = std::min(x0, left);
        y0 = std::min(y0, top);
        x1 = std::max(x1, left + w);
        y1 = std::max(y1, top + h);
      }
      pen += static_cast<int>(g->advance.x >> 6);
    }
    if (x0 == INT_MAX) return PixelBox{};
    return PixelBox{x0, y0, x1 - x0, y1 - y0};
  }
};

TextStamper::TextStamper(std::unique_ptr<State> state) : state_(std::move(state)) {}

TextStamper::~TextStamper() {
  for (auto& [file, face] : state_->faces) FT_Done_Face(face);
  FT_Done_FreeType(state_->library);
}

absl::StatusOr<std::unique_ptr<TextStamper>> TextStamper::Open() {
  auto state = std::make_unique<State>();
  if (FT_Init_FreeType(&state->library) != 0) return absl::InternalError("cannot start FreeType");
  return std::unique_ptr<TextStamper>(new TextStamper(std::move(state)));
}

absl::StatusOr<PixelBox> TextStamper::Measure(const std::string& font_file, int pixel_height, const std::string& text) {
  return state_->Layout(font_file, pixel_height, text, {});
}

absl::StatusOr<PixelBox> TextStamper::Stamp(std::vector<double>& picture, int n, const std::string& font_file,
                                            int pixel_height, const std::string& text, int x, int y, double value) {
  int x0 = INT_MAX, y0 = INT_MAX, x1 = INT_MIN, y1 = INT_MIN;
  auto laid = state_->Layout(font_file, pixel_height, text, [&](const FT_Bitmap& b, int left, int top) {
    for (unsigned r = 0; r < b.rows; ++r) {
      const int py = y + top + static_cast<int>(r);
      if (py < 0 || py >= n) continue;
      for (unsigned c = 0; c < b.width; ++c) {
        const int px = x + left + static_cast<int>(c);
        if (px < 0 || px >= n) continue;
        const double a = b.buffer[static_cast<size_t>(r) * static_cast<size_t>(std::abs(b.pitch)) + c] / 255.0;
        if (a <= 0) continue;
        double& v = picture[static_cast<size_t>(py) * static_cast<size_t>(n) + static_cast<size_t>(px)];
        v = v * (1 - a) + value * a;
        x0 = std::min(x0, px);
        y0 = std::min(y0, py);
        x1 = std::max(x1, px + 1);
        y1 = std::max(y1, py + 1);
      }
    }
  });
  if (!laid.ok()) return laid.status();
  if (x0 == INT_MAX) return PixelBox{};
  return PixelBox{x0, y0, x1 - x0, y1 - y0};
}

}  // namespace fedtune::ingest
