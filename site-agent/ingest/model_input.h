// One DICOM image for live prediction: decoded in memory through exactly the
// pixel path ingest takes (filters, decoding, modality/VOI LUT, MONOCHROME1,
// fitting to the workspace's size, the cache's quantisation), so a model
// sees a live image as it saw the images it was validated on. Nothing is
// stored and nothing identifying is read out: refusals name attributes,
// codes and sizes only.
#pragma once

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "site-agent/ingest/filters.h"
#include "site-agent/ingest/pixels.h"

namespace fedtune::ingest {

struct ModelInputOptions {
  FilterOptions filters;  // the site's [ingest] filters (burned-in text is not refused here)
  int image_size = 518;   // the workspace's cache size
  FitMode fit = FitMode::kPad;
  int cache_bits = 8;
};

struct ModelInput {
  int size = 0;               // the image is size x size
  std::vector<float> pixels;  // row-major, values in [0, 1]
};

// `part10` is a DICOM Part 10 file (or a bare dataset). INVALID_ARGUMENT
// with the reason for anything a client sent wrong (not DICOM, a modality
// or SOP class the site does not take, too small or too large, no decoder,
// not monochrome, undecodable pixels); the reason starts with the name of
// the quarantine reason ingest would record ("modality: ...").
absl::StatusOr<ModelInput> DecodeForModel(std::string_view part10, const ModelInputOptions& options);

}  // namespace fedtune::ingest
