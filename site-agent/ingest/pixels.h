// Radiograph pixels from a DICOM dataset, as a person would see them:
// decoded (uncompressed, JPEG baseline/extended/lossless, JPEG-LS, RLE), modality
// LUT applied (rescale slope/intercept, negative slopes included), VOI from the
// file's first window or VOI LUT, otherwise a window over the used modality
// values that are not Pixel Padding Value (or within Pixel Padding Range Limit), MONOCHROME1 inverted exactly once, then resized with area averaging
// (antialiased) to a square.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

class DcmDataset;  // DCMTK

namespace fedtune::ingest {

// Presentation values, row-major, 0 (black) .. 65535 (white).
struct GrayImage {
  int width = 0;
  int height = 0;
  std::vector<uint16_t> pixels;
};

// Decodes frame 0. FAILED_PRECONDITION with a reason that can be recorded
// (no pixel data, not monochrome, transfer syntax without a decoder, corrupt
// data); never a crash.
absl::StatusOr<GrayImage> DecodeGray(DcmDataset& dataset);

enum class FitMode {
  kPad,   // keep the whole image: scale the longer side to `size`, pad with black
  kCrop,  // fill the square: scale the shorter side to `size`, crop the centre
};

// Resizes `image` to size x size keeping its aspect ratio, averaging every
// source pixel an output pixel covers (so downscaling does not alias).
GrayImage FitSquare(const GrayImage& image, int size, FitMode mode);

// Cache bytes of a presentation image (the workspace's pixel cache):
// uint8 rounded from the 16-bit values (cache_bits 8), or the values
// themselves as little-endian uint16 (cache_bits 16).
std::vector<uint8_t> CacheBytes(const GrayImage& image, int cache_bits);

// The values in [0, 1] a model sees for `image` after it went through a
// cache of `cache_bits` (what the site's training and evaluation read), so
// that an image predicted live is seen exactly as the images it was
// validated on.
std::vector<float> ModelPixels(const GrayImage& image, int cache_bits);

// Area-average resampling of a float image (exposed for tests).
std::vector<float> ResizeArea(const std::vector<float>& in, int width, int height, int out_width, int out_height);

// Registers DCMTK's JPEG, JPEG-LS and RLE decoders and turns DCMTK's own
// logging off (its messages can quote attribute values); idempotent and
// thread-safe. Called by everything in ingest that reads DICOM.
void RegisterDecoders();

}  // namespace fedtune::ingest
