#include "site-agent/ingest/filters.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fedtune::ingest {
namespace {

std::string Get(DcmDataset& ds, const DcmTagKey& tag) {
  OFString v;
  ds.findAndGetOFString(tag, v);
  return std::string(absl::StripAsciiWhitespace(absl::string_view(v.c_str(), v.length())));
}

bool IsRadiographSopClass(const std::string& uid) {
  return uid == UID_ComputedRadiographyImageStorage || uid == UID_DigitalXRayImageStorageForPresentation ||
         uid == UID_DigitalXRayImageStorageForProcessing;
}

}  // namespace

std::string_view QuarantineReasonName(QuarantineReason r) {
  switch (r) {
    case QuarantineReason::kUnreadable: return "unreadable";
    case QuarantineReason::kNoPixelData: return "no_pixel_data";
    case QuarantineReason::kModality: return "modality";
    case QuarantineReason::kSopClass: return "sop_class";
    case QuarantineReason::kBodyPart: return "body_part";
    case QuarantineReason::kTooSmall: return "too_small";
    case QuarantineReason::kBurnedIn: return "burned_in_annotation";
    case QuarantineReason::kBurnedInText: return "burned_in_text";
    case QuarantineReason::kTransferSyntax: return "transfer_syntax";
    case QuarantineReason::kNotMonochrome: return "not_monochrome";
    case QuarantineReason::kUndecodable: return "undecodable";
    case QuarantineReason::kUnlabelled: return "unlabelled";
    case QuarantineReason::kTooLarge: return "too_large";
    case QuarantineReason::kMissingIdentifier: return "missing_identifier";
  }
  return "unreadable";
}

bool HasDecoder(std::string_view uid) {
  static const char* const kDecodable[] = {
      UID_LittleEndianImplicitTransferSyntax, UID_LittleEndianExplicitTransferSyntax,
      UID_BigEndianExplicitTransferSyntax,    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
      UID_RLELosslessTransferSyntax,          UID_JPEGProcess1TransferSyntax,
      UID_JPEGProcess2_4TransferSyntax,       UID_JPEGProcess14TransferSyntax,
      UID_JPEGProcess14SV1TransferSyntax,     UID_JPEGLSLosslessTransferSyntax,
      UID_JPEGLSLossyTransferSyntax,
  };
  for (const char* d : kDecodable) {
    if (uid == d) return true;
  }
  return false;
}

std::optional<Quarantine> CheckHeader(DcmDataset& ds, const FilterOptions& o) {
  if (!ds.tagExists(DCM_PixelData)) return Quarantine{QuarantineReason::kNoPixelData, "no PixelData attribute"};
  const std::string modality = absl::AsciiStrToUpper(Get(ds, DCM_Modality));
  bool modality_ok = false;
  for (const std::string& m : o.modalities) modality_ok = modality_ok || absl::AsciiStrToUpper(m) == modality;
  if (!modality_ok) {
    return Quarantine{QuarantineReason::kModality,
                      absl::StrCat("modality ", modality.empty() ? "(none)" : modality, " is not one of ",
                                   absl::StrJoin(o.modalities, ", "))};
  }
  const std::string sop = Get(ds, DCM_SOPClassUID);
  if ((modality == "CR" || modality == "DX") && !IsRadiographSopClass(sop)) {
    return Quarantine{QuarantineReason::kSopClass,
                      absl::StrCat("SOP class ", sop.empty() ? "(none)" : sop, " is not CR or DX image storage")};
  }
  const std::string body = absl::AsciiStrToUpper(Get(ds, DCM_BodyPartExamined));
  if (o.require_chest && !body.empty() && body != "CHEST") {
    return Quarantine{QuarantineReason::kBodyPart, absl::StrCat("body part ", body, " is not CHEST")};
  }
  Uint16 rows = 0, cols = 0;
  ds.findAndGetUint16(DCM_Rows, rows);
  ds.findAndGetUint16(DCM_Columns, cols);
  if (rows < o.min_rows || cols < o.min_columns) {
    return Quarantine{QuarantineReason::kTooSmall, absl::StrCat(cols, "x", rows, " is below the minimum ",
                                                                o.min_columns, "x", o.min_rows)};
  }
  if (rows > o.max_rows || cols > o.max_columns) {
    return Quarantine{QuarantineReason::kTooLarge, absl::StrCat(cols, "x", rows, " is above the maximum ",
                                                                o.max_columns, "x", o.max_rows)};
  }
  int64_t frames = 1;
  if (const std::string nf = Get(ds, DCM_NumberOfFrames); !nf.empty() && (!absl::SimpleAtoi(nf, &frames) || frames < 1)) {
    return Quarantine{QuarantineReason::kUnreadable, "NumberOfFrames is not a positive number"};
  }
  if (frames > o.max_frames) {
    return Quarantine{QuarantineReason::kTooLarge,
                      absl::StrCat(frames, " frames is above the maximum of ", o.max_frames)};
  }
  Uint16 bits = 16, samples = 1;
  if (ds.findAndGetUint16(DCM_BitsAllocated, bits).bad() || bits == 0) bits = 16;
  if (ds.findAndGetUint16(DCM_SamplesPerPixel, samples).bad() || samples == 0) samples = 1;
  const int64_t decoded = int64_t{rows} * cols * frames * samples * ((bits + 7) / 8);
  if (decoded > o.max_decoded_bytes) {
    return Quarantine{QuarantineReason::kTooLarge,
                      absl::StrCat(cols, "x", rows, "x", frames, " frames would decode to ", decoded >> 20,
                                   " MiB, above the maximum of ", o.max_decoded_bytes >> 20, " MiB")};
  }
  if (o.refuse_burned_in && absl::AsciiStrToUpper(Get(ds, DCM_BurnedInAnnotation)) == "YES") {
    return Quarantine{QuarantineReason::kBurnedIn, "BurnedInAnnotation is YES"};
  }
  const char* xfer = DcmXfer(ds.getOriginalXfer()).getXferID();
  if (xfer != nullptr && *xfer != '\0' && !HasDecoder(xfer)) {
    return Quarantine{QuarantineReason::kTransferSyntax,
                      absl::StrCat("no decoder for ", DcmXfer(ds.getOriginalXfer()).getXferName())};
  }
  const std::string pi = Get(ds, DCM_PhotometricInterpretation);
  if (pi != "MONOCHROME1" && pi != "MONOCHROME2") {
    return Quarantine{QuarantineReason::kNotMonochrome, absl::StrCat("photometric interpretation ", pi)};
  }
  return std::nullopt;
}

}  // namespace fedtune::ingest
