#include "site-agent/ingest/pixels.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcelem.h>
#include <dcmtk/dcmdata/dcrledrg.h>
#include <dcmtk/dcmimgle/dcmimage.h>
#include <dcmtk/dcmimgle/dipixel.h>
#include <dcmtk/dcmjpeg/djdecode.h>
#include <dcmtk/dcmjpls/djdecode.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fedtune::ingest {
namespace {

// The source samples each output sample of one axis reads, with their
// weights: area averaging when shrinking (out[o] = mean of in over
// [o * scale, (o + 1) * scale), partial pixels weighted by their overlap),
// linear interpolation between pixel centres when enlarging. Computed once
// per axis, then applied to every line.
struct AxisTaps {
  std::vector<int> first;       // per output: first source index
  std::vector<int> count;       // per output: number of taps
  std::vector<size_t> offset;   // per output: where its weights start
  std::vector<float> weights;   // sum to 1 per output
};

AxisTaps ComputeTaps(int n_in, int n_out) {
  AxisTaps t;
  const double scale = static_cast<double>(n_in) / n_out;
  for (int o = 0; o < n_out; ++o) {
    t.offset.push_back(t.weights.size());
    if (scale <= 1.0) {
      const double c = (o + 0.5) * scale - 0.5;
      const int i0 = std::clamp(static_cast<int>(std::floor(c)), 0, n_in - 1);
      const int i1 = std::min(i0 + 1, n_in - 1);
      const double f = std::clamp(c - i0, 0.0, 1.0);
      t.first.push_back(i0);
      t.count.push_back(i1 > i0 ? 2 : 1);
      t.weights.push_back(static_cast<float>(i1 > i0 ? 1 - f : 1.0));
      if (i1 > i0) t.weights.push_back(static_cast<float>(f));
      continue;
    }
    const double a = o * scale, b = (o + 1) * scale;
    const int lo = static_cast<int>(std::floor(a));
    const int hi = std::min(static_cast<int>(std::ceil(b)), n_in);
    t.first.push_back(lo);
    int taps = 0;
    for (int i = lo; i < hi; ++i) {
      const double w = std::min<double>(b, i + 1) - std::max<double>(a, i);
      t.weights.push_back(static_cast<float>(std::max(w, 0.0) / scale));
      ++taps;
    }
    t.count.push_back(taps);
  }
  return t;
}

// The modality values (after rescale) that Pixel Padding Value, and Pixel
// Padding Range Limit when present, mark as "not part of the image", or
// nothing when the file has no padding or maps stored values through a
// Modality LUT table (not a straight line the padding could follow).
std::optional<std::pair<double, double>> PaddingRange(DcmDataset& ds) {
  if (ds.tagExists(DCM_ModalityLUTSequence)) return std::nullopt;
  Uint16 representation = 0;
  ds.findAndGetUint16(DCM_PixelRepresentation, representation);
  auto stored = [&](const DcmTagKey& tag) -> std::optional<double> {
    Uint16 u = 0;
    Sint16 s = 0;
    if (ds.findAndGetUint16(tag, u).good()) return representation == 1 ? static_cast<Sint16>(u) : u;
    if (ds.findAndGetSint16(tag, s).good()) return s;
    return std::nullopt;
  };
  const std::optional<double> value = stored(DCM_PixelPaddingValue);
  if (!value) return std::nullopt;
  const double limit = stored(DCM_PixelPaddingRangeLimit).value_or(*value);
  Float64 slope = 1, intercept = 0;
  if (ds.findAndGetFloat64(DCM_RescaleSlope, slope).bad()) slope = 1;
  if (ds.findAndGetFloat64(DCM_RescaleIntercept, intercept).bad()) intercept = 0;
  const double a = *value * slope + intercept, b = limit * slope + intercept;
  return std::make_pair(std::min(a, b), std::max(a, b));
}

template <typename T>
bool RangeOutside(const T* v, unsigned long n, std::pair<double, double> pad, double& lo, double& hi) {
  bool any = false;
  // Modality values are held as integers: a padding value that rescales to a
  // fraction matches the integers within half a step of it.
  const double pad_lo = pad.first - 0.5, pad_hi = pad.second + 0.5;
  for (unsigned long i = 0; i < n; ++i) {
    const double x = static_cast<double>(v[i]);
    if (x > pad_lo && x < pad_hi) continue;
    if (!any) {
      lo = hi = x;
      any = true;
    } else {
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
  }
  return any;
}

// Min and max of the modality values that are not padding.
bool UsedRangeWithoutPadding(const DicomImage& image, std::pair<double, double> pad, double& lo, double& hi) {
  const DiPixel* inter = image.getInterData();
  if (inter == nullptr || inter->getData() == nullptr) return false;
  const unsigned long n = inter->getCount();
  switch (inter->getRepresentation()) {
    case EPR_Uint8: return RangeOutside(static_cast<const Uint8*>(inter->getData()), n, pad, lo, hi);
    case EPR_Sint8: return RangeOutside(static_cast<const Sint8*>(inter->getData()), n, pad, lo, hi);
    case EPR_Uint16: return RangeOutside(static_cast<const Uint16*>(inter->getData()), n, pad, lo, hi);
    case EPR_Sint16: return RangeOutside(static_cast<const Sint16*>(inter->getData()), n, pad, lo, hi);
    case EPR_Uint32: return RangeOutside(static_cast<const Uint32*>(inter->getData()), n, pad, lo, hi);
    case EPR_Sint32: return RangeOutside(static_cast<const Sint32*>(inter->getData()), n, pad, lo, hi);
  }
  return false;
}

// Attributes changed for the duration of a decode and put back afterwards
// (the caller's dataset ends as it came, but for the decompressed pixels),
// which spares copying a whole image to change three header values.
class TemporaryAttributes {
 public:
  explicit TemporaryAttributes(DcmDataset& ds) : ds_(ds) {}
  ~TemporaryAttributes() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second) {
        ds_.putAndInsertString(it->first, it->second->c_str());
      } else {
        delete ds_.remove(it->first);
      }
    }
  }
  TemporaryAttributes(const TemporaryAttributes&) = delete;
  TemporaryAttributes& operator=(const TemporaryAttributes&) = delete;

  void Set(const DcmTagKey& tag, const std::string& value) {
    OFString old;
    if (ds_.findAndGetOFStringArray(tag, old).good()) {
      saved_.emplace_back(tag, std::string(old.c_str(), old.length()));
    } else {
      saved_.emplace_back(tag, std::nullopt);
    }
    ds_.putAndInsertString(tag, value.c_str());
  }

 private:
  DcmDataset& ds_;
  std::vector<std::pair<DcmTagKey, std::optional<std::string>>> saved_;
};

}  // namespace

void RegisterDecoders() {
  static std::once_flag once;
  std::call_once(once, [] {
    // DCMTK's own log lines can quote attribute values (patient names in a
    // malformed element): fedtune reports problems itself, without values.
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
  });
}

std::vector<float> ResizeArea(const std::vector<float>& in, int width, int height, int out_width, int out_height) {
  // Rows first (contiguous reads), then columns as weighted sums of whole
  // rows (contiguous, vectorizable), instead of strided column walks.
  const AxisTaps tx = ComputeTaps(width, out_width), ty = ComputeTaps(height, out_height);
  const size_t w = static_cast<size_t>(width), ow = static_cast<size_t>(out_width);
  std::vector<float> tmp(ow * static_cast<size_t>(height));
  for (int y = 0; y < height; ++y) {
    const float* src = in.data() + static_cast<size_t>(y) * w;
    float* dst = tmp.data() + static_cast<size_t>(y) * ow;
    for (size_t o = 0; o < ow; ++o) {
      const float* wt = tx.weights.data() + tx.offset[o];
      const float* s = src + tx.first[o];
      float sum = 0;
      for (int k = 0; k < tx.count[o]; ++k) sum += wt[k] * s[k];
      dst[o] = sum;
    }
  }
  std::vector<float> out(ow * static_cast<size_t>(out_height), 0.0f);
  for (int o = 0; o < out_height; ++o) {
    float* dst = out.data() + static_cast<size_t>(o) * ow;
    const float* wt = ty.weights.data() + ty.offset[o];
    for (int k = 0; k < ty.count[o]; ++k) {
      const float* row = tmp.data() + static_cast<size_t>(ty.first[o] + k) * ow;
      const float wk = wt[k];
      for (size_t x = 0; x < ow; ++x) dst[x] += wk * row[x];
    }
  }
  return out;
}

absl::StatusOr<GrayImage> DecodeGray(DcmDataset& dataset) {
  RegisterDecoders();
  if (!dataset.tagExists(DCM_PixelData)) return absl::FailedPreconditionError("no pixel data");
  // Decompress in place first so an unsupported transfer syntax is reported as such.
  const E_TransferSyntax original = dataset.getOriginalXfer();
  if (dataset.chooseRepresentation(EXS_LittleEndianExplicit, nullptr).bad() || !dataset.canWriteXfer(EXS_LittleEndianExplicit)) {
    return absl::FailedPreconditionError(
        absl::StrCat("no decoder for transfer syntax ", DcmXfer(original).getXferName()));
  }
  // MONOCHROME1 is shown inverted. Rather than let the renderer invert its
  // rounded output (which can differ by one step from the MONOCHROME2 twin of
  // the same picture), negate the modality transform and any window and render
  // as MONOCHROME2: a MONOCHROME1 image and its MONOCHROME2 twin then reach the
  // renderer with identical values. A VOI LUT is left to the renderer.
  DcmDataset* source = &dataset;
  TemporaryAttributes negated(dataset);  // restored when decoding is done
  OFString photometric;
  dataset.findAndGetOFString(DCM_PhotometricInterpretation, photometric);
  if (photometric != "MONOCHROME1" && photometric != "MONOCHROME2") {
    return absl::FailedPreconditionError("not a monochrome image");
  }
  if (photometric == "MONOCHROME1" && !dataset.tagExists(DCM_VOILUTSequence)) {
    // DCMTK zeroes the output when an attribute is absent: defaults are the identity.
    Float64 slope = 1, intercept = 0;
    if (dataset.findAndGetFloat64(DCM_RescaleSlope, slope).bad()) slope = 1;
    if (dataset.findAndGetFloat64(DCM_RescaleIntercept, intercept).bad()) intercept = 0;
    OFString centers;
    std::string flipped;
    if (dataset.findAndGetOFStringArray(DCM_WindowCenter, centers).good() && !centers.empty()) {
      for (absl::string_view c : absl::StrSplit(absl::string_view(centers.c_str(), centers.length()), '\\')) {
        double v = 0;
        if (!absl::SimpleAtod(c, &v)) break;
        absl::StrAppend(&flipped, flipped.empty() ? "" : "\\", -v);
      }
    }
    negated.Set(DCM_PhotometricInterpretation, "MONOCHROME2");
    negated.Set(DCM_RescaleSlope, absl::StrCat(-slope));
    negated.Set(DCM_RescaleIntercept, absl::StrCat(-intercept));
    if (!flipped.empty()) negated.Set(DCM_WindowCenter, flipped);
  }
  DicomImage image(source, EXS_LittleEndianExplicit, CIF_UsePartialAccessToPixelData, 0, 1);
  if (image.getStatus() != EIS_Normal) {
    return absl::FailedPreconditionError(absl::StrCat("pixel data cannot be decoded: ",
                                                      DicomImage::getString(image.getStatus())));
  }
  if (!image.isMonochrome()) return absl::FailedPreconditionError("not a monochrome image");
  if (image.getWindowCount() > 0) {
    image.setWindow(0);
  } else if (image.getVoiLutCount() > 0) {
    image.setVoiLut(0);
  } else {
    // A window spanning the used modality values, set explicitly so that the
    // same values always meet the same window arithmetic (twins stay identical).
    // Padding (the area outside the collimated field that the modality filled
    // with Pixel Padding Value) is not part of the range: it would stretch the
    // window and wash the anatomy out; the window clips it like any value outside.
    double lo = 0, hi = 0;
    const auto padding = PaddingRange(*source);
    const bool used = padding ? UsedRangeWithoutPadding(image, *padding, lo, hi) : image.getMinMaxValues(lo, hi, 0);
    if (used && hi > lo) {
      image.setWindow((lo + hi) / 2, hi - lo + 1);
    } else {
      image.setMinMaxWindow(0);
    }
  }
  GrayImage out;
  out.width = static_cast<int>(image.getWidth());
  out.height = static_cast<int>(image.getHeight());
  const auto* data = static_cast<const uint16_t*>(image.getOutputData(16));
  if (data == nullptr || out.width <= 0 || out.height <= 0) {
    return absl::FailedPreconditionError("pixel data cannot be rendered");
  }
  out.pixels.assign(data, data + static_cast<size_t>(out.width) * static_cast<size_t>(out.height));
  return out;
}

GrayImage FitSquare(const GrayImage& image, int size, FitMode mode) {
  const double sx = static_cast<double>(size) / image.width, sy = static_cast<double>(size) / image.height;
  const double s = mode == FitMode::kPad ? std::min(sx, sy) : std::max(sx, sy);
  const int w = std::max(1, static_cast<int>(std::lround(image.width * s)));
  const int h = std::max(1, static_cast<int>(std::lround(image.height * s)));
  std::vector<float> in(image.pixels.begin(), image.pixels.end());
  const std::vector<float> scaled = ResizeArea(in, image.width, image.height, w, h);
  GrayImage out;
  out.width = out.height = size;
  out.pixels.assign(static_cast<size_t>(size) * static_cast<size_t>(size), 0);
  const int ox = (size - w) / 2, oy = (size - h) / 2;  // negative when cropping
  for (int y = 0; y < size; ++y) {
    const int sy2 = y - oy;
    if (sy2 < 0 || sy2 >= h) continue;
    for (int x = 0; x < size; ++x) {
      const int sx2 = x - ox;
      if (sx2 < 0 || sx2 >= w) continue;
      const float v = scaled[static_cast<size_t>(sy2) * static_cast<size_t>(w) + static_cast<size_t>(sx2)];
      out.pixels[static_cast<size_t>(y) * static_cast<size_t>(size) + static_cast<size_t>(x)] =
          static_cast<uint16_t>(std::clamp(std::lround(v), 0L, 65535L));
    }
  }
  return out;
}

std::vector<uint8_t> CacheBytes(const GrayImage& image, int cache_bits) {
  std::vector<uint8_t> out;
  if (cache_bits == 16) {
    out.resize(image.pixels.size() * 2);
    for (size_t i = 0; i < image.pixels.size(); ++i) {
      out[2 * i] = static_cast<uint8_t>(image.pixels[i] & 0xff);
      out[2 * i + 1] = static_cast<uint8_t>(image.pixels[i] >> 8);
    }
  } else {
    out.resize(image.pixels.size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>((image.pixels[i] + 128u) / 257u);
  }
  return out;
}

std::vector<float> ModelPixels(const GrayImage& image, int cache_bits) {
  const std::vector<uint8_t> bytes = CacheBytes(image, cache_bits);
  std::vector<float> out(image.pixels.size());
  if (cache_bits == 16) {
    for (size_t i = 0; i < out.size(); ++i) {
      out[i] = static_cast<float>(bytes[2 * i] | (bytes[2 * i + 1] << 8)) / 65535.0f;
    }
  } else {
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(bytes[i]) / 255.0f;
  }
  return out;
}

}  // namespace fedtune::ingest
