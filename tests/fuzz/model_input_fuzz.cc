// Fuzzes what the site inference service does with a DICOM request body
// (site-agent/ingest/model_input.h, DecodeForModel): any bytes are refused
// with INVALID_ARGUMENT or decoded to a 32 x 32 image of values in [0, 1];
// never a crash, a leak, undefined behaviour or an allocation the bytes do
// not justify. The filters let every modality and small sizes through so the
// seeds (pydicom's test files, synthetic radiographs) reach decoding, and
// keep the bounds that stop decompression bombs.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "site-agent/ingest/model_input.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedtune::ingest;
  static const ModelInputOptions options = [] {
    ModelInputOptions o;
    o.filters.modalities = {"CR", "DX", "CT", "MR", "OT", "RTDOSE", "US", "MG"};
    o.filters.min_rows = o.filters.min_columns = 1;
    o.filters.max_rows = o.filters.max_columns = 2048;
    o.filters.max_frames = 4;
    o.filters.max_file_bytes = 1 << 20;
    o.filters.max_decoded_bytes = 16 << 20;
    o.image_size = 32;
    return o;
  }();
  const auto image = DecodeForModel(std::string_view(reinterpret_cast<const char*>(data), size), options);
  if (!image.ok()) {
    fedtune::fuzz::Check(image.status().code() == absl::StatusCode::kInvalidArgument, "refusals are INVALID_ARGUMENT");
    return 0;
  }
  fedtune::fuzz::Check(image->size == 32 && image->pixels.size() == 32 * 32, "a 32 x 32 image");
  for (float v : image->pixels) fedtune::fuzz::Check(v >= 0.0f && v <= 1.0f, "values in [0, 1]");
  return 0;
}
