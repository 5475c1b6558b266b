#include "site-agent/ingest/pixels.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcrleerg.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmjpeg/djencode.h>
#include <dcmtk/dcmjpeg/djrplol.h>
#include <dcmtk/dcmjpeg/djrploss.h>
#include <dcmtk/dcmjpls/djencode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace fedtune::ingest {
namespace {

constexpr int kW = 64, kH = 48;

// A 12-bit DX image: a smooth ramp plus a bright square.
std::vector<uint16_t> Pattern() {
  std::vector<uint16_t> v(kW * kH);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) v[y * kW + x] = static_cast<uint16_t>(x * 40 + y * 20 + ((x > 20 && x < 30 && y > 10 && y < 20) ? 1000 : 0));
  return v;
}

std::unique_ptr<DcmDataset> Image(const std::vector<uint16_t>& stored, const char* photometric, const char* slope = nullptr,
                                  const char* intercept = nullptr) {
  auto ds = std::make_unique<DcmDataset>();
  ds->putAndInsertString(DCM_SOPClassUID, UID_DigitalXRayImageStorageForPresentation);
  ds->putAndInsertString(DCM_SOPInstanceUID, "2.25.1");
  ds->putAndInsertString(DCM_Modality, "DX");
  ds->putAndInsertUint16(DCM_Rows, kH);
  ds->putAndInsertUint16(DCM_Columns, kW);
  ds->putAndInsertUint16(DCM_SamplesPerPixel, 1);
  ds->putAndInsertString(DCM_PhotometricInterpretation, photometric);
  ds->putAndInsertUint16(DCM_BitsAllocated, 16);
  ds->putAndInsertUint16(DCM_BitsStored, 12);
  ds->putAndInsertUint16(DCM_HighBit, 11);
  ds->putAndInsertUint16(DCM_PixelRepresentation, 0);
  if (slope != nullptr) {
    ds->putAndInsertString(DCM_RescaleSlope, slope);
    ds->putAndInsertString(DCM_RescaleIntercept, intercept);
  }
  ds->putAndInsertUint16Array(DCM_PixelData, stored.data(), static_cast<unsigned long>(stored.size()));
  return ds;
}

std::vector<uint16_t> Inverted(std::vector<uint16_t> v) {
  for (auto& x : v) x = static_cast<uint16_t>(4095 - x);
  return v;
}

TEST(Pixels, ResizeAreaAveragesWhatEachOutputPixelCovers) {
  std::vector<float> checker(16);
  for (int i = 0; i < 16; ++i) checker[i] = static_cast<float>(((i % 4) + (i / 4)) % 2);
  auto half = ResizeArea(checker, 4, 4, 2, 2);
  for (float v : half) EXPECT_FLOAT_EQ(v, 0.5f);  // no aliasing: a checkerboard averages to grey
  std::vector<float> ramp = {0, 1, 2, 3, 4, 5};
  auto third = ResizeArea(ramp, 6, 1, 2, 1);
  EXPECT_FLOAT_EQ(third[0], 1.0f);
  EXPECT_FLOAT_EQ(third[1], 4.0f);
  auto frac = ResizeArea(ramp, 6, 1, 4, 1);  // 1.5 source pixels per output pixel
  EXPECT_FLOAT_EQ(frac[0], (0 * 1.0f + 1 * 0.5f) / 1.5f);
}

TEST(Pixels, FitSquarePadsOrCropsKeepingAspect) {
  GrayImage wide{200, 100, std::vector<uint16_t>(200 * 100, 1000)};
  GrayImage pad = FitSquare(wide, 100, FitMode::kPad);
  ASSERT_EQ(pad.pixels.size(), 100u * 100u);
  EXPECT_EQ(pad.pixels[0], 0);              // black bar on top
  EXPECT_EQ(pad.pixels[50 * 100 + 50], 1000);
  EXPECT_EQ(pad.pixels[99 * 100 + 50], 0);  // and below
  GrayImage crop = FitSquare(wide, 100, FitMode::kCrop);
  EXPECT_EQ(crop.pixels[0], 1000);          // no bars
}

TEST(Pixels, DecodesWithMinMaxWindowOverTheFullRange) {
  auto ds = Image(Pattern(), "MONOCHROME2");
  auto img = DecodeGray(*ds);
  ASSERT_TRUE(img.ok()) << img.status();
  EXPECT_EQ(img->width, kW);
  EXPECT_EQ(img->height, kH);
  // Darkest corner is black-ish, brightest spot white-ish.
  EXPECT_LT(img->pixels[0], 2000);
  EXPECT_GT(*std::max_element(img->pixels.begin(), img->pixels.end()), 63000);
}

// Twins: the same picture stored differently decodes to the same array.
TEST(Pixels, Monochrome1TwinDecodesIdentically) {
  auto mono2 = DecodeGray(*Image(Pattern(), "MONOCHROME2"));
  auto mono1 = DecodeGray(*Image(Inverted(Pattern()), "MONOCHROME1"));
  ASSERT_TRUE(mono2.ok() && mono1.ok());
  EXPECT_EQ(mono1->pixels, mono2->pixels);
}

TEST(Pixels, Monochrome1TwinWithWindowDecodesIdentically) {
  auto mono2 = Image(Pattern(), "MONOCHROME2");
  mono2->putAndInsertString(DCM_WindowCenter, "1500");
  mono2->putAndInsertString(DCM_WindowWidth, "1200");
  auto mono1 = Image(Inverted(Pattern()), "MONOCHROME1");
  mono1->putAndInsertString(DCM_WindowCenter, "2595");  // 4095 - 1500
  mono1->putAndInsertString(DCM_WindowWidth, "1200");
  auto a = DecodeGray(*mono2), b = DecodeGray(*mono1);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status();
  EXPECT_EQ(a->pixels, b->pixels);
  // The caller's dataset is untouched.
  OFString pi;
  mono1->findAndGetOFString(DCM_PhotometricInterpretation, pi);
  EXPECT_STREQ(pi.c_str(), "MONOCHROME1");
}

TEST(Pixels, NegativeRescaleSlopeTwinDecodesIdentically) {
  auto plain = DecodeGray(*Image(Pattern(), "MONOCHROME2", "1", "0"));
  auto negative = DecodeGray(*Image(Inverted(Pattern()), "MONOCHROME2", "-1", "4095"));
  ASSERT_TRUE(plain.ok() && negative.ok()) << negative.status();
  EXPECT_EQ(plain->pixels, negative->pixels);
}

TEST(Pixels, CompressedTwinsDecodeIdentically) {
  DcmRLEEncoderRegistration::registerCodecs();
  DJLSEncoderRegistration::registerCodecs();
  DJEncoderRegistration::registerCodecs();
  auto reference = DecodeGray(*Image(Pattern(), "MONOCHROME2"));
  ASSERT_TRUE(reference.ok());
  const DJ_RPLossless jpeg_lossless;  // process 14, selection value 1
  for (E_TransferSyntax xfer : {EXS_RLELossless, EXS_JPEGLSLossless, EXS_JPEGProcess14SV1}) {
    auto ds = Image(Pattern(), "MONOCHROME2");
    const DcmRepresentationParameter* params = xfer == EXS_JPEGProcess14SV1 ? &jpeg_lossless : nullptr;
    ASSERT_TRUE(ds->chooseRepresentation(xfer, params).good()) << DcmXfer(xfer).getXferName();
    ASSERT_TRUE(ds->canWriteXfer(xfer));
    ds->removeAllButCurrentRepresentations();  // only the compressed pixels remain
    auto img = DecodeGray(*ds);
    ASSERT_TRUE(img.ok()) << img.status();
    EXPECT_EQ(img->pixels, reference->pixels) << DcmXfer(xfer).getXferName();
  }
}

// Lossy JPEG (extended, 12 bit) decodes to nearly the same picture.
TEST(Pixels, LossyJpegExtendedDecodesCloseToTheOriginal) {
  DJEncoderRegistration::registerCodecs();
  auto reference = DecodeGray(*Image(Pattern(), "MONOCHROME2"));
  auto ds = Image(Pattern(), "MONOCHROME2");
  const DJ_RPLossy quality(95);
  ASSERT_TRUE(ds->chooseRepresentation(EXS_JPEGProcess2_4, &quality).good());
  ds->removeAllButCurrentRepresentations();
  auto img = DecodeGray(*ds);
  ASSERT_TRUE(img.ok()) << img.status();
  double diff = 0;
  for (size_t i = 0; i < img->pixels.size(); ++i) diff += std::abs(img->pixels[i] - reference->pixels[i]);
  EXPECT_LT(diff / img->pixels.size() / 65535.0, 0.01);
}

// Baseline JPEG (process 1: 8-bit, lossy), the commonest compression in PACS
// exports of older CR units, decodes to nearly the same picture.
TEST(Pixels, BaselineJpeg8BitDecodesCloseToTheOriginal) {
  DJEncoderRegistration::registerCodecs();
  std::vector<uint8_t> stored(kW * kH);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) stored[y * kW + x] = static_cast<uint8_t>(x * 2 + y + ((x > 20 && x < 30) ? 60 : 0));
  auto make = [&] {
    auto ds = Image(Pattern(), "MONOCHROME2");
    ds->putAndInsertUint16(DCM_BitsAllocated, 8);
    ds->putAndInsertUint16(DCM_BitsStored, 8);
    ds->putAndInsertUint16(DCM_HighBit, 7);
    ds->putAndInsertUint8Array(DCM_PixelData, stored.data(), static_cast<unsigned long>(stored.size()));
    return ds;
  };
  auto reference = DecodeGray(*make());
  ASSERT_TRUE(reference.ok()) << reference.status();
  auto ds = make();
  const DJ_RPLossy quality(95);
  ASSERT_TRUE(ds->chooseRepresentation(EXS_JPEGProcess1, &quality).good());
  ds->removeAllButCurrentRepresentations();
  ASSERT_EQ(ds->getCurrentXfer(), EXS_JPEGProcess1);
  auto img = DecodeGray(*ds);
  ASSERT_TRUE(img.ok()) << img.status();
  ASSERT_EQ(img->pixels.size(), reference->pixels.size());
  double diff = 0;
  for (size_t i = 0; i < img->pixels.size(); ++i) diff += std::abs(img->pixels[i] - reference->pixels[i]);
  EXPECT_LT(diff / img->pixels.size() / 65535.0, 0.02);
  EXPECT_GT(diff, 0) << "lossy: not bit-identical, so the codec really ran";
}

// The same picture inside a border the modality filled with Pixel Padding
// Value: without a window in the file, the padding must not stretch the
// min-max window, so the picture decodes exactly as it does without the border.
std::unique_ptr<DcmDataset> Padded(const std::vector<uint16_t>& inner, uint16_t pad, const char* photometric,
                                   bool declare_padding) {
  constexpr int kB = 8, kPW = kW + 2 * kB, kPH = kH + 2 * kB;
  std::vector<uint16_t> v(kPW * kPH, pad);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) v[(y + kB) * kPW + x + kB] = inner[y * kW + x];
  auto ds = Image(v, photometric);
  ds->putAndInsertUint16(DCM_Rows, kPH);
  ds->putAndInsertUint16(DCM_Columns, kPW);
  if (declare_padding) ds->putAndInsertUint16(DCM_PixelPaddingValue, pad);
  return ds;
}

std::vector<uint16_t> Interior(const GrayImage& img) {
  constexpr int kB = 8;
  std::vector<uint16_t> out;
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) out.push_back(img.pixels[(y + kB) * img.width + x + kB]);
  return out;
}

std::vector<uint16_t> Shifted() {  // 500 .. ~2700: padding at 0 or 4095 lies outside
  auto v = Pattern();
  for (auto& x : v) x = static_cast<uint16_t>(x / 2 + 500);
  return v;
}

TEST(Pixels, PixelPaddingValueIsLeftOutOfTheMinMaxWindow) {
  auto plain = DecodeGray(*Image(Shifted(), "MONOCHROME2"));
  auto padded = DecodeGray(*Padded(Shifted(), 0, "MONOCHROME2", true));
  auto undeclared = DecodeGray(*Padded(Shifted(), 0, "MONOCHROME2", false));
  ASSERT_TRUE(plain.ok() && padded.ok() && undeclared.ok());
  EXPECT_EQ(Interior(*padded), plain->pixels);
  EXPECT_EQ(padded->pixels[0], 0);  // the padding is black
  // Control: the same border without the attribute widens the window, so the
  // picture comes out brighter-floored and different.
  const std::vector<uint16_t> washed = Interior(*undeclared);
  EXPECT_NE(washed, plain->pixels);
  EXPECT_GT(*std::min_element(washed.begin(), washed.end()), 5000);
}

TEST(Pixels, PixelPaddingValueInMonochrome1TwinDecodesIdentically) {
  // MONOCHROME1 pads with its black: the largest stored value.
  auto mono2 = DecodeGray(*Padded(Shifted(), 0, "MONOCHROME2", true));
  auto mono1 = DecodeGray(*Padded(Inverted(Shifted()), 4095, "MONOCHROME1", true));
  ASSERT_TRUE(mono2.ok() && mono1.ok());
  EXPECT_EQ(mono1->pixels, mono2->pixels);
}

// MONOCHROME1 is decoded through a temporarily negated header: the caller's
// dataset keeps its own values, and decoding it again gives the same image.
TEST(Pixels, Monochrome1DecodeLeavesTheHeaderAsItWas) {
  auto plain = Image(Inverted(Pattern()), "MONOCHROME1");
  auto windowed = Image(Inverted(Pattern()), "MONOCHROME1", "2", "-100");
  windowed->putAndInsertString(DCM_WindowCenter, "3000\\2500");
  windowed->putAndInsertString(DCM_WindowWidth, "4000\\3000");
  for (DcmDataset* ds : {plain.get(), windowed.get()}) {
    auto first = DecodeGray(*ds);
    auto second = DecodeGray(*ds);
    ASSERT_TRUE(first.ok() && second.ok());
    EXPECT_EQ(first->pixels, second->pixels);
    OFString v;
    ASSERT_TRUE(ds->findAndGetOFString(DCM_PhotometricInterpretation, v).good());
    EXPECT_EQ(v, "MONOCHROME1");
  }
  EXPECT_FALSE(plain->tagExists(DCM_RescaleSlope));
  EXPECT_FALSE(plain->tagExists(DCM_RescaleIntercept));
  EXPECT_FALSE(plain->tagExists(DCM_WindowCenter));
  OFString v;
  windowed->findAndGetOFStringArray(DCM_RescaleSlope, v);
  EXPECT_EQ(v, "2");
  windowed->findAndGetOFStringArray(DCM_RescaleIntercept, v);
  EXPECT_EQ(v, "-100");
  windowed->findAndGetOFStringArray(DCM_WindowCenter, v);
  EXPECT_EQ(v, "3000\\2500");
}

TEST(Pixels, WindowInTheFileIsUsed) {
  auto ds = Image(Pattern(), "MONOCHROME2");
  ds->putAndInsertString(DCM_WindowCenter, "1000");
  ds->putAndInsertString(DCM_WindowWidth, "400");
  auto img = DecodeGray(*ds);
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->pixels[0], 0);                      // 0 is far below the window
  EXPECT_EQ(img->pixels[kH * kW - 1], 65535);        // the bright corner far above it
}

TEST(Pixels, UndecodableInputIsAReasonNotACrash) {
  DcmDataset empty;
  EXPECT_EQ(DecodeGray(empty).status().message(), "no pixel data");
  auto ds = Image(Pattern(), "MONOCHROME2");
  ds->putAndInsertUint16(DCM_Rows, 4000);  // claims far more pixels than present
  auto r = DecodeGray(*ds);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fedtune::ingest
