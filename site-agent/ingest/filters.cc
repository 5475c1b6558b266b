#include "site-agent/ingest/filters.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcxfer.h>

#include "absl/strings/ascii.h"
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
    case QuarantineReason::kTransferSyntax: return "transfer_syntax";
    case QuarantineReason::kNotMonochrome: return "not_monochrome";
    case QuarantineReason::kUndecodable: return "undecodable";
    case QuarantineReason::kUnlabelled: return "unlabelled";
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
  if (absl::AsciiStrToUpper(Get(ds, DCM_BurnedInAnnotation)) == "YES") {
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
