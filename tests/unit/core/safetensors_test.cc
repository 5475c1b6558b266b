#include "common/core/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "common/core/file_io.h"

namespace fedtune {
namespace {

// A file image from header text and data bytes, built by hand from the format's
// definition (8-byte little-endian length, JSON, data), independent of the writer.
std::string Image(const std::string& header, const std::string& data = "") {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  return out + header + data;
}

Tensor Filled(DType dtype, std::vector<int64_t> shape, uint8_t seed) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data.resize(static_cast<size_t>(*NumElements(t.shape)) * DTypeSize(dtype));
  for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = static_cast<std::byte>((i * 31 + seed) & 0xFF);
  return t;
}

absl::Status Parse(const std::string& image) {
  return SafetensorsFile::FromBytes(image).status();
}

void ExpectRefused(const std::string& image, absl::StatusCode code, const std::string& needle) {
  absl::Status s = Parse(image);
  EXPECT_EQ(s.code(), code) << s;
  EXPECT_NE(s.message().find(needle), std::string::npos) << "message: " << s.message();
}

TEST(Safetensors, ReadsAHandBuiltFile) {
  // Two F32 values then one I64, offsets as the format defines them.
  float f[2] = {1.5f, -3.0f};
  int64_t i = 42;
  std::string data(reinterpret_cast<char*>(f), 8);
  data.append(reinterpret_cast<char*>(&i), 8);
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("n":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})";
  auto file = SafetensorsFile::FromBytes(Image(header, data));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("format"), "pt");
  ASSERT_EQ(file->entries().size(), 2u);
  EXPECT_EQ(file->entries()[0].name, "w");  // file order, by offset
  auto w = file->Read("w");
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w->ToFloats(), (std::vector<float>{1.5f, -3.0f}));
  auto n = file->Read("n");
  ASSERT_TRUE(n.ok());
  EXPECT_TRUE(n->shape.empty());
  int64_t got;
  std::memcpy(&got, n->data.data(), 8);
  EXPECT_EQ(got, 42);
  EXPECT_EQ(file->Read("missing").status().code(), absl::StatusCode::kNotFound);
}

class SafetensorsDTypeTest : public ::testing::TestWithParam<DType> {};

TEST_P(SafetensorsDTypeTest, RoundTripsThroughAFile) {
  const DType dtype = GetParam();
  TensorMap tensors;
  tensors["base_model.model.encoder.layer.0.attention.attention.query.lora_A.weight"] =
      Filled(dtype, {4, 6}, 1);
  tensors["classifier.bias"] = Filled(dtype, {3}, 2);
  tensors["scalar"] = Filled(dtype, {}, 3);
  tensors["empty"] = Filled(dtype, {0, 5}, 4);
  const SafetensorsMetadata meta = {{"format", "pt"}, {"round", "3"}};
  const std::string path = ::testing::TempDir() + "/rt_" + std::string(DTypeName(dtype)) + ".safetensors";
  ASSERT_TRUE(WriteSafetensors(path, tensors, meta).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->ReadAll(), tensors);
  EXPECT_EQ(file->metadata(), meta);

  // Written -> read -> written again is bit-exact.
  auto again = SerializeSafetensors(file->ReadAll(), file->metadata());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *ReadFileBytes(path));
  // Header padded so the data section is 8-byte aligned.
  uint64_t n;
  std::memcpy(&n, again->data(), 8);
  EXPECT_EQ(n % 8, 0u);
}

INSTANTIATE_TEST_SUITE_P(AllDTypes, SafetensorsDTypeTest,
                         ::testing::Values(DType::kF32, DType::kF16, DType::kBF16, DType::kI64,
                                           DType::kU8, DType::kF64, DType::kI32, DType::kI16,
                                           DType::kI8, DType::kBool),
                         [](const auto& info) { return std::string(DTypeName(info.param)); });

TEST(Safetensors, WriterRefusesInconsistentTensors) {
  TensorMap bad;
  bad["x"] = Filled(DType::kF32, {2, 2}, 0);
  bad["x"].data.pop_back();
  EXPECT_EQ(SerializeSafetensors(bad).status().code(), absl::StatusCode::kInvalidArgument);
  TensorMap reserved;
  reserved["__metadata__"] = Filled(DType::kU8, {1}, 0);
  EXPECT_FALSE(SerializeSafetensors(reserved).ok());
}

TEST(Safetensors, OpenMissingFileIsNotFound) {
  EXPECT_EQ(SafetensorsFile::Open(::testing::TempDir() + "/absent.safetensors").status().code(),
            absl::StatusCode::kNotFound);
}

// ---- malformed files: each refused with a clear error, never a crash ----

const std::string kOneF32 = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

TEST(SafetensorsMalformed, TooShortForLength) {
  ExpectRefused("", absl::StatusCode::kDataLoss, "too short");
  ExpectRefused("\x05\x00\x00", absl::StatusCode::kDataLoss, "too short");
}

TEST(SafetensorsMalformed, HeaderLengthPastEof) {
  std::string img = Image(kOneF32, std::string(8, '\0'));
  img[0] = static_cast<char>(0xFF);
  img[1] = static_cast<char>(0x0F);  // 4095 > file size
  ExpectRefused(img, absl::StatusCode::kDataLoss, "runs past the end");
}

TEST(SafetensorsMalformed, HugeHeaderRefusedBeforeAllocating) {
  std::string img(16, '\0');
  img[5] = 0x01;  // 2^40 bytes
  ExpectRefused(img, absl::StatusCode::kInvalidArgument, "exceeds the limit");
  std::string max(8, static_cast<char>(0xFF));
  ExpectRefused(max, absl::StatusCode::kInvalidArgument, "exceeds the limit");
}

TEST(SafetensorsMalformed, TruncatedData) {
  ExpectRefused(Image(kOneF32, std::string(5, '\0')), absl::StatusCode::kDataLoss, "truncated");
}

TEST(SafetensorsMalformed, TrailingBytes) {
  ExpectRefused(Image(kOneF32, std::string(12, '\0')), absl::StatusCode::kInvalidArgument, "trailing");
}

TEST(SafetensorsMalformed, NotAnObject) {
  ExpectRefused(Image("[1, 2, 3]"), absl::StatusCode::kInvalidArgument, "JSON object");
  ExpectRefused(Image("\"text\""), absl::StatusCode::kInvalidArgument, "JSON object");
  ExpectRefused(Image(""), absl::StatusCode::kInvalidArgument, "JSON object");
}

TEST(SafetensorsMalformed, InvalidJson) {
  ExpectRefused(Image(R"({"a":{"dtype":"F32",)"), absl::StatusCode::kInvalidArgument, "not valid JSON");
  ExpectRefused(Image("{\"a\xff\":1}"), absl::StatusCode::kInvalidArgument, "not valid JSON");
}

TEST(SafetensorsMalformed, DuplicateKey) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  ExpectRefused(Image(h, std::string(8, '\0')), absl::StatusCode::kInvalidArgument, "duplicate key \"a\"");
  const std::string nested = R"({"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}})";
  ExpectRefused(Image(nested, std::string(4, '\0')), absl::StatusCode::kInvalidArgument, "duplicate key");
}

TEST(SafetensorsMalformed, UnknownDtype) {
  ExpectRefused(Image(R"({"a":{"dtype":"F8","shape":[1],"data_offsets":[0,1]}})", "x"),
                absl::StatusCode::kInvalidArgument, "unknown dtype \"F8\"");
}

TEST(SafetensorsMalformed, ShapeSizeMismatch) {
  ExpectRefused(Image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')),
                absl::StatusCode::kInvalidArgument, "needs 12 bytes");
}

TEST(SafetensorsMalformed, OverlappingOffsets) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  ExpectRefused(Image(h, std::string(8, '\0')), absl::StatusCode::kInvalidArgument, "overlap");
}

TEST(SafetensorsMalformed, GapBetweenOffsets) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                        R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  ExpectRefused(Image(h, std::string(12, '\0')), absl::StatusCode::kInvalidArgument, "gap");
  ExpectRefused(Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0')),
                absl::StatusCode::kInvalidArgument, "gap");
}

TEST(SafetensorsMalformed, BadOffsetsAndDimensions) {
  ExpectRefused(Image(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[4,0]}})", "xxxx"),
                absl::StatusCode::kInvalidArgument, "end before they begin");
  ExpectRefused(Image(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", "x"),
                absl::StatusCode::kInvalidArgument, "[begin, end]");
  ExpectRefused(Image(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", "x"),
                absl::StatusCode::kInvalidArgument, "non-negative integer");
  ExpectRefused(Image(R"({"a":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}})", "x"),
                absl::StatusCode::kInvalidArgument, "non-negative integer");
  ExpectRefused(Image(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})",
                      std::string(8, '\0')),
                absl::StatusCode::kInvalidArgument, "too many elements");
  ExpectRefused(Image(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":1}})", "x"),
                absl::StatusCode::kInvalidArgument, "unknown field");
  ExpectRefused(Image(R"({"a":[1]})"), absl::StatusCode::kInvalidArgument, "must be an object");
}

TEST(SafetensorsMalformed, BadMetadata) {
  ExpectRefused(Image(R"({"__metadata__":{"n":1}})"), absl::StatusCode::kInvalidArgument, "must be a string");
  ExpectRefused(Image(R"({"__metadata__":[]})"), absl::StatusCode::kInvalidArgument, "__metadata__");
}

TEST(SafetensorsMalformed, DeeplyNestedJsonDoesNotCrash) {
  std::string deep = R"({"a":{"dtype":"U8","shape":)" + std::string(100000, '[') + std::string(100000, ']') +
                     R"(,"data_offsets":[0,1]}})";
  EXPECT_FALSE(Parse(Image(deep, "x")).ok());
}

// Random corruption of a valid file: every outcome is a status, never a crash
// (run under ASan+UBSan with -DFEDTUNE_SANITIZE=ON).
TEST(SafetensorsMalformed, RandomCorruptionNeverCrashes) {
  TensorMap tensors;
  tensors["a"] = Filled(DType::kF32, {3, 4}, 7);
  tensors["b"] = Filled(DType::kBF16, {5}, 9);
  const std::string good = *SerializeSafetensors(tensors, {{"k", "v"}});
  uint64_t header_len;
  std::memcpy(&header_len, good.data(), 8);
  std::mt19937 rng(1234);
  int refused = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string img = good;
    switch (iter % 3) {
      case 0:  // flip a few bytes
        for (int k = 0; k < 1 + iter % 4; ++k) img[rng() % img.size()] = static_cast<char>(rng());
        break;
      case 1:  // truncate
        img.resize(rng() % img.size());
        break;
      case 2:  // flip a byte in the header only
        img[8 + rng() % header_len] ^= static_cast<char>(1 + rng() % 255);
        break;
    }
    auto f = SafetensorsFile::FromBytes(img);
    if (!f.ok()) {
      ++refused;
      EXPECT_FALSE(f.status().message().empty());
    } else {
      (void)f->ReadAll();
    }
  }
  EXPECT_GT(refused, 1500);
}

}  // namespace
}  // namespace fedtune
