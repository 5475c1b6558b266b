#include "site-agent/ingest/burned_in.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcpixel.h>
#include <tesseract/baseapi.h>
#include <tesseract/resultiterator.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string_view>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedtune::ingest {
namespace {

// The longer side of the picture Tesseract reads. Burned-in text is printed
// for a reader of the whole image, so at this size its letters stay 10-40
// pixels tall, where Tesseract reads best, on radiographs of any size; and
// the time per image does not grow with the detector's resolution.
constexpr int kWorkSide = 1024;

std::string Normalised(std::string_view word) {
  std::string out;
  for (char c : word) {
    if (absl::ascii_isalnum(static_cast<unsigned char>(c))) out += absl::ascii_toupper(static_cast<unsigned char>(c));
  }
  return out;
}

// Levenshtein distance, stopping early above `limit`.
int EditDistance(const std::string& a, const std::string& b, int limit) {
  if (std::abs(static_cast<int>(a.size()) - static_cast<int>(b.size())) > limit) return limit + 1;
  std::vector<int> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int diagonal = row[0];
    row[0] = static_cast<int>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
      diagonal = up;
    }
  }
  return row[b.size()];
}

// Whether a word Tesseract read is one of the allowed markers, or a long
// one misread: OCR often loses or changes a letter of a long marker printed
// over anatomy ("ORTABLE", "PORTA", "BORTABLE").
bool IsMarker(const std::string& word, const std::set<std::string>& allowed) {
  if (allowed.count(word)) return true;
  if (word.size() < 3) return false;
  for (const std::string& m : allowed) {
    if (m.size() < 5) continue;
    if (m.find(word) != std::string::npos || EditDistance(word, m, 1) <= 1) return true;
  }
  return false;
}

bool Overlaps(const PixelBox& a, const PixelBox& b) {
  const int w = std::min(a.x + a.width, b.x + b.width) - std::max(a.x, b.x);
  const int h = std::min(a.y + a.height, b.y + b.height) - std::max(a.y, b.y);
  return w > 0 && h > 0 && 2 * w * h > a.width * a.height;  // more than half of a
}

// Words on one line joined into one box (the spaces and punctuation between
// them are part of what is blacked out): boxes that share most of their
// height and lie at most two letter heights apart.
std::vector<PixelBox> JoinLines(std::vector<PixelBox> words) {
  std::sort(words.begin(), words.end(), [](const PixelBox& a, const PixelBox& b) { return a.x < b.x; });
  std::vector<PixelBox> lines;
  for (const PixelBox& w : words) {
    bool joined = false;
    for (PixelBox& l : lines) {
      const int shared = std::min(l.y + l.height, w.y + w.height) - std::max(l.y, w.y);
      const int gap = w.x - (l.x + l.width);
      if (2 * shared > std::min(l.height, w.height) && gap <= 2 * std::max(l.height, w.height)) {
        const int x1 = std::max(l.x + l.width, w.x + w.width), y1 = std::max(l.y + l.height, w.y + w.height);
        l.x = std::min(l.x, w.x);
        l.y = std::min(l.y, w.y);
        l.width = x1 - l.x;
        l.height = y1 - l.y;
        joined = true;
        break;
      }
    }
    if (!joined) lines.push_back(w);
  }
  return lines;
}

}  // namespace

std::string_view BurnedInModeName(BurnedInMode mode) {
  switch (mode) {
    case BurnedInMode::kOff: return "off";
    case BurnedInMode::kQuarantine: return "quarantine";
    case BurnedInMode::kRedact: return "redact";
  }
  return "?";
}

absl::StatusOr<BurnedInMode> ParseBurnedInMode(std::string_view name) {
  for (BurnedInMode m : {BurnedInMode::kOff, BurnedInMode::kQuarantine, BurnedInMode::kRedact}) {
    if (name == BurnedInModeName(m)) return m;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("use \"quarantine\", \"redact\" or \"off\", got \"", std::string(name), "\""));
}

std::vector<std::string> DefaultAllowedMarkers() {
  return {"L", "R", "PA", "AP", "LAT", "LATERAL", "LLAT", "RLAT", "LL", "RL", "PORTABLE", "PORT", "SUPINE", "ERECT",
          "UPRIGHT", "SITTING", "SEMIERECT", "DECUBITUS", "DECUB", "LDEC", "RDEC", "INSP", "EXP", "CHEST"};
}

struct TextDetector::State {
  BurnedInOptions options;
  std::set<std::string> allowed;
  std::mutex mu;
  std::vector<std::unique_ptr<tesseract::TessBaseAPI>> idle;

  absl::StatusOr<std::unique_ptr<tesseract::TessBaseAPI>> Engine() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!idle.empty()) {
        auto api = std::move(idle.back());
        idle.pop_back();
        return api;
      }
    }
    auto api = std::make_unique<tesseract::TessBaseAPI>();
    // Tesseract's own messages go nowhere: they could quote what it read.
    api->SetVariable("debug_file", "/dev/null");
    const char* dir = options.tessdata_dir.empty() ? nullptr : options.tessdata_dir.c_str();
    if (api->Init(dir, "eng", tesseract::OEM_LSTM_ONLY) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot load Tesseract's English model (eng.traineddata) from ",
          options.tessdata_dir.empty() ? "Tesseract's default folder" : options.tessdata_dir,
          ": install Debian's tesseract-ocr-eng, set [deid] tessdata_dir, or set [deid] burned_in = \"off\""));
    }
    // Sparse text: as many words as possible, in no particular layout.
    api->SetPageSegMode(tesseract::PSM_SPARSE_TEXT);
    return api;
  }

  void Return(std::unique_ptr<tesseract::TessBaseAPI> api) {
    std::lock_guard<std::mutex> lock(mu);
    idle.push_back(std::move(api));
  }
};

TextDetector::TextDetector(std::unique_ptr<State> state) : state_(std::move(state)) {}
TextDetector::~TextDetector() = default;

absl::StatusOr<std::unique_ptr<TextDetector>> TextDetector::Open(const BurnedInOptions& options) {
  auto state = std::make_unique<State>();
  state->options = options;
  for (const std::string& m : options.allowed_markers) state->allowed.insert(Normalised(m));
  // One engine now, so a missing model is reported at start-up, not at the
  // first image.
  auto first = state->Engine();
  if (!first.ok()) return first.status();
  state->Return(std::move(*first));
  return std::unique_ptr<TextDetector>(new TextDetector(std::move(state)));
}

absl::StatusOr<TextFound> TextDetector::Find(const GrayImage& image) {
  TextFound found;
  if (image.width <= 0 || image.height <= 0) return found;
  // Scaled (either way) so the longer side is kWorkSide, then 8 bits.
  const double scale = static_cast<double>(kWorkSide) / std::max(image.width, image.height);
  const int w = std::max(1, static_cast<int>(std::lround(image.width * scale)));
  const int h = std::max(1, static_cast<int>(std::lround(image.height * scale)));
  std::vector<float> in(image.pixels.begin(), image.pixels.end());
  const std::vector<float> scaled = ResizeArea(in, image.width, image.height, w, h);
  std::vector<unsigned char> bytes(scaled.size());
  for (size_t i = 0; i < scaled.size(); ++i) {
    bytes[i] = static_cast<unsigned char>(std::clamp(std::lround(scaled[i] / 257.0f), 0L, 255L));
  }
  auto engine = state_->Engine();
  if (!engine.ok()) return engine.status();
  std::unique_ptr<tesseract::TessBaseAPI> api = std::move(*engine);
  api->SetImage(bytes.data(), w, h, 1, w);
  api->SetSourceResolution(300);
  if (api->Recognize(nullptr) != 0) {
    api->Clear();
    state_->Return(std::move(api));
    return absl::InternalError("Tesseract could not read the image");
  }
  // Words first, sorted into markers and text; a misread piece of a marker
  // (lying on a word read as a marker) is part of that marker.
  struct Word {
    PixelBox box;
    bool marker;
  };
  std::vector<Word> words;
  std::unique_ptr<tesseract::ResultIterator> it(api->GetIterator());
  if (it != nullptr && !it->Empty(tesseract::RIL_WORD)) {
    do {
      std::unique_ptr<char[]> text(it->GetUTF8Text(tesseract::RIL_WORD));
      if (text == nullptr) continue;
      const std::string word = Normalised(text.get());
      // One letter or digit, or one repeated ("eee"): too little to
      // identify anyone, and what texture reads as.
      if (word.empty()) continue;
      const bool marker = IsMarker(word, state_->allowed);
      if (!marker && std::set<char>(word.begin(), word.end()).size() < 2) continue;
      // Tesseract is often unsure of what it reads of text printed over
      // anatomy, yet sure it is text: a word of three or more letters and
      // digits without lower case (what modalities print) counts whatever
      // its confidence; other words need min_confidence.
      const std::string_view raw(text.get());
      const bool printed_like =
          word.size() >= 3 && std::none_of(raw.begin(), raw.end(), [](char c) { return absl::ascii_islower(static_cast<unsigned char>(c)); });
      if (!marker && !printed_like &&
          it->Confidence(tesseract::RIL_WORD) < static_cast<float>(state_->options.min_confidence)) {
        continue;
      }
      int left = 0, top = 0, right = 0, bottom = 0;
      if (!it->BoundingBox(tesseract::RIL_WORD, &left, &top, &right, &bottom)) continue;
      // Back to the image's pixels, rounded outwards.
      PixelBox box;
      box.x = std::max(0, static_cast<int>(std::floor(left / scale)));
      box.y = std::max(0, static_cast<int>(std::floor(top / scale)));
      box.width = std::min(image.width, static_cast<int>(std::ceil(right / scale))) - box.x;
      box.height = std::min(image.height, static_cast<int>(std::ceil(bottom / scale))) - box.y;
      if (box.width > 0 && box.height > 0) words.push_back(Word{box, marker});
    } while (it->Next(tesseract::RIL_WORD));
  }
  std::vector<PixelBox> text;
  for (const Word& w : words) {
    if (w.marker) {
      ++found.markers;
      continue;
    }
    const bool on_marker = std::any_of(words.begin(), words.end(), [&](const Word& m) { return m.marker && Overlaps(w.box, m.box); });
    if (!on_marker) text.push_back(w.box);
  }
  found.text = JoinLines(std::move(text));
  it.reset();
  api->Clear();
  state_->Return(std::move(api));
  return found;
}

std::vector<PixelBox> Grow(const std::vector<PixelBox>& boxes, int margin, int width, int height) {
  std::vector<PixelBox> out;
  for (const PixelBox& b : boxes) {
    const int x0 = std::max(0, b.x - margin), y0 = std::max(0, b.y - margin);
    const int x1 = std::min(width, b.x + b.width + margin), y1 = std::min(height, b.y + b.height + margin);
    if (x1 > x0 && y1 > y0) out.push_back(PixelBox{x0, y0, x1 - x0, y1 - y0});
  }
  return out;
}

int RedactionMargin(int width, int height) { return std::max(2, std::max(width, height) / 128); }

void BlackOut(GrayImage& image, const std::vector<PixelBox>& boxes) {
  for (const PixelBox& b : Grow(boxes, 0, image.width, image.height)) {
    for (int y = b.y; y < b.y + b.height; ++y) {
      std::fill_n(image.pixels.begin() + static_cast<ptrdiff_t>(y) * image.width + b.x, b.width, uint16_t{0});
    }
  }
}

absl::Status BlackOutStored(DcmDataset& dataset, const GrayImage& shown, const std::vector<PixelBox>& boxes) {
  Uint16 rows = 0, columns = 0, bits_allocated = 0;
  dataset.findAndGetUint16(DCM_Rows, rows);
  dataset.findAndGetUint16(DCM_Columns, columns);
  dataset.findAndGetUint16(DCM_BitsAllocated, bits_allocated);
  if (rows != shown.height || columns != shown.width || shown.pixels.empty()) {
    return absl::InternalError("the decoded image does not match the dataset's rows and columns");
  }
  Sint32 frames = 1;
  if (dataset.findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  DcmElement* element = nullptr;
  if (dataset.findAndGetElement(DCM_PixelData, element).bad() || element == nullptr) {
    return absl::InternalError("no pixel data to black out");
  }
  const size_t frame_pixels = static_cast<size_t>(rows) * columns;
  const size_t darkest = static_cast<size_t>(
      std::min_element(shown.pixels.begin(), shown.pixels.end()) - shown.pixels.begin());
  const std::vector<PixelBox> clipped = Grow(boxes, 0, columns, rows);
  auto fill = [&](auto* data, size_t count) {
    if (data == nullptr || count < frame_pixels * static_cast<size_t>(frames)) return false;
    const auto black = data[darkest];
    for (Sint32 f = 0; f < frames; ++f) {
      auto* frame = data + static_cast<size_t>(f) * frame_pixels;
      for (const PixelBox& b : clipped) {
        for (int y = b.y; y < b.y + b.height; ++y) std::fill_n(frame + static_cast<size_t>(y) * columns + b.x, b.width, black);
      }
    }
    return true;
  };
  bool done = false;
  if (bits_allocated == 16) {
    Uint16* data = nullptr;
    done = element->getUint16Array(data).good() && fill(data, element->getLength() / 2);
  } else if (bits_allocated == 8) {
    Uint8* data = nullptr;
    done = element->getUint8Array(data).good() && fill(data, element->getLength());
  }
  if (!done) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot black out text in pixel data of ", bits_allocated, " bits allocated"));
  }
  // The compressed form, if any, still holds the text: only the edited,
  // uncompressed one may be written.
  if (auto* pixel_data = dynamic_cast<DcmPixelData*>(element)) pixel_data->removeAllButCurrentRepresentations();
  return absl::OkStatus();
}

absl::Status MarkPixelsCleaned(DcmDataset& dataset) {
  if (dataset.putAndInsertString(DCM_BurnedInAnnotation, "NO").bad()) {
    return absl::InternalError("cannot write BurnedInAnnotation");
  }
  DcmItem* item = nullptr;
  if (dataset.findOrCreateSequenceItem(DCM_DeidentificationMethodCodeSequence, item, -2).bad() || item == nullptr) {
    return absl::InternalError("cannot write DeidentificationMethodCodeSequence");
  }
  item->putAndInsertString(DCM_CodeValue, "113101");
  item->putAndInsertString(DCM_CodingSchemeDesignator, "DCM");
  item->putAndInsertString(DCM_CodeMeaning, "Clean Pixel Data Option");
  return absl::OkStatus();
}

}  // namespace fedtune::ingest
