#include "site-agent/ingest/filters.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <gtest/gtest.h>

#include <functional>
#include <memory>

namespace fedtune::ingest {
namespace {

std::unique_ptr<DcmDataset> ChestDx() {
  auto ds = std::make_unique<DcmDataset>();
  ds->putAndInsertString(DCM_SOPClassUID, UID_DigitalXRayImageStorageForPresentation);
  ds->putAndInsertString(DCM_Modality, "DX");
  ds->putAndInsertString(DCM_BodyPartExamined, "CHEST");
  ds->putAndInsertString(DCM_PhotometricInterpretation, "MONOCHROME2");
  ds->putAndInsertUint16(DCM_Rows, 2048);
  ds->putAndInsertUint16(DCM_Columns, 2048);
  const Uint16 px[4] = {0, 1, 2, 3};
  ds->putAndInsertUint16Array(DCM_PixelData, px, 4);
  return ds;
}

struct Case {
  const char* name;
  std::function<void(DcmDataset&)> mutate;
  QuarantineReason reason;
  const char* detail;
};

TEST(Filters, EachRuleQuarantinesWithItsReason) {
  FilterOptions o;
  o.require_chest = true;
  EXPECT_EQ(CheckHeader(*ChestDx(), o), std::nullopt);
  const Case cases[] = {
      {"no pixels", [](DcmDataset& d) { d.findAndDeleteElement(DCM_PixelData); }, QuarantineReason::kNoPixelData,
       "no PixelData attribute"},
      {"MR", [](DcmDataset& d) { d.putAndInsertString(DCM_Modality, "MR"); }, QuarantineReason::kModality,
       "modality MR is not one of CR, DX"},
      {"sop", [](DcmDataset& d) { d.putAndInsertString(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage); },
       QuarantineReason::kSopClass, "SOP class 1.2.840.10008.5.1.4.1.1.7 is not CR or DX image storage"},
      {"head", [](DcmDataset& d) { d.putAndInsertString(DCM_BodyPartExamined, "HEAD"); }, QuarantineReason::kBodyPart,
       "body part HEAD is not CHEST"},
      {"small", [](DcmDataset& d) { d.putAndInsertUint16(DCM_Rows, 100); }, QuarantineReason::kTooSmall,
       "2048x100 is below the minimum 256x256"},
      {"burned", [](DcmDataset& d) { d.putAndInsertString(DCM_BurnedInAnnotation, "YES"); },
       QuarantineReason::kBurnedIn, "BurnedInAnnotation is YES"},
      {"rgb", [](DcmDataset& d) { d.putAndInsertString(DCM_PhotometricInterpretation, "RGB"); },
       QuarantineReason::kNotMonochrome, "photometric interpretation RGB"},
      {"huge", [](DcmDataset& d) { d.putAndInsertUint16(DCM_Columns, 30000); }, QuarantineReason::kTooLarge,
       "30000x2048 is above the maximum 16384x16384"},
      {"frames", [](DcmDataset& d) { d.putAndInsertString(DCM_NumberOfFrames, "65"); }, QuarantineReason::kTooLarge,
       "65 frames is above the maximum of 64"},
      {"bad frames", [](DcmDataset& d) { d.putAndInsertString(DCM_NumberOfFrames, "-3"); },
       QuarantineReason::kUnreadable, "NumberOfFrames is not a positive number"},
      // 4 pixels of data that claim 16384 x 16384 x 60 frames: a decompression
      // bomb is refused from its header, before anything is decompressed.
      {"bomb",
       [](DcmDataset& d) {
         d.putAndInsertUint16(DCM_Rows, 16384);
         d.putAndInsertUint16(DCM_Columns, 16384);
         d.putAndInsertUint16(DCM_BitsAllocated, 16);
         d.putAndInsertString(DCM_NumberOfFrames, "60");
       },
       QuarantineReason::kTooLarge, "16384x16384x60 frames would decode to 30720 MiB, above the maximum of 1024 MiB"},
  };
  for (const Case& c : cases) {
    auto ds = ChestDx();
    c.mutate(*ds);
    auto q = CheckHeader(*ds, o);
    ASSERT_TRUE(q.has_value()) << c.name;
    EXPECT_EQ(q->reason, c.reason) << c.name;
    EXPECT_EQ(q->detail, c.detail) << c.name;
  }
  // Body part is only checked when asked for, and a missing one is accepted.
  auto head = ChestDx();
  head->putAndInsertString(DCM_BodyPartExamined, "HEAD");
  EXPECT_EQ(CheckHeader(*head, FilterOptions{}), std::nullopt);
  auto none = ChestDx();
  none->findAndDeleteElement(DCM_BodyPartExamined);
  EXPECT_EQ(CheckHeader(*none, o), std::nullopt);
}

TEST(Filters, DecodableTransferSyntaxes) {
  EXPECT_TRUE(HasDecoder(UID_JPEGLSLosslessTransferSyntax));
  EXPECT_TRUE(HasDecoder(UID_RLELosslessTransferSyntax));
  EXPECT_TRUE(HasDecoder(UID_JPEGProcess14SV1TransferSyntax));
  EXPECT_FALSE(HasDecoder(UID_JPEG2000LosslessOnlyTransferSyntax));
  EXPECT_FALSE(HasDecoder("1.2.840.10008.1.2.4.201"));  // HTJ2K
  EXPECT_EQ(QuarantineReasonName(QuarantineReason::kBurnedIn), "burned_in_annotation");
}

}  // namespace
}  // namespace fedtune::ingest

