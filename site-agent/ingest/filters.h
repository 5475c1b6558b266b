// Which files ingest accepts. Every refusal is a reason that is counted and
// listed (quarantine), never a silent drop. Reasons and details hold no
// patient data: only attribute names, standard codes and sizes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

class DcmDataset;  // DCMTK

namespace fedtune::ingest {

enum class QuarantineReason {
  kUnreadable,      // not DICOM, truncated or corrupt
  kNoPixelData,
  kModality,        // Modality not in the accepted list
  kSopClass,        // SOP Class is not CR/DX image storage
  kBodyPart,        // BodyPartExamined present and not CHEST (when required)
  kTooSmall,        // fewer rows or columns than configured
  kBurnedIn,        // BurnedInAnnotation YES
  kTransferSyntax,  // compressed with a syntax fedtune has no decoder for
  kNotMonochrome,
  kUndecodable,     // pixel data present but cannot be rendered
  kUnlabelled,      // no row in the labels file
  kTooLarge,        // file, rows, columns, frames or decoded size above the configured maximum
  kMissingIdentifier,  // no PatientID or no SOPInstanceUID: no pseudonym, split or row of its own
  kBurnedInText,    // text found in the pixels ([deid] burned_in = "quarantine")
};

// "unreadable", "modality", ... (stable names for the index and `stats`).
std::string_view QuarantineReasonName(QuarantineReason r);

struct FilterOptions {
  std::vector<std::string> modalities = {"CR", "DX"};
  bool require_chest = false;
  int min_rows = 256;
  int min_columns = 256;
  // Upper bounds, so that one file cannot exhaust a site's memory: a file
  // larger than max_file_bytes is not read, and a header whose rows,
  // columns or frames exceed theirs, or whose pixel data would decompress to
  // more than max_decoded_bytes, is refused before anything is decompressed
  // (a small compressed file that claims a huge image is a decompression
  // bomb). Both are quarantined as too_large.
  int max_rows = 16384;
  int max_columns = 16384;
  int max_frames = 64;
  int64_t max_file_bytes = int64_t{512} << 20;
  int64_t max_decoded_bytes = int64_t{1} << 30;
  // BurnedInAnnotation YES refuses the file. Ingest keeps pixels and
  // de-identified copies, so it quarantines them (unless [deid] burned_in
  // is "redact": then the text is blacked out instead); live prediction
  // stores nothing and turns this off.
  bool refuse_burned_in = true;
};

struct Quarantine {
  QuarantineReason reason;
  std::string detail;  // e.g. "modality MR is not one of CR, DX"
};

// Checks the header of a loaded dataset (pixel data is not decoded here).
// nullopt = accepted.
std::optional<Quarantine> CheckHeader(DcmDataset& dataset, const FilterOptions& options);

// True for transfer syntaxes DCMTK decodes here: uncompressed, deflated, RLE,
// JPEG baseline / extended / lossless, JPEG-LS.
bool HasDecoder(std::string_view transfer_syntax_uid);

}  // namespace fedtune::ingest
