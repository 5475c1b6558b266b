// The safetensors file format: an 8-byte little-endian header length N, N
// bytes of JSON describing every tensor ({"name": {"dtype", "shape",
// "data_offsets": [begin, end)}} plus an optional "__metadata__" map of
// strings), then the tensor bytes.
//
// Reading validates the header exactly as the format defines it and refuses
// anything else with INVALID_ARGUMENT or DATA_LOSS naming what is wrong:
// header length past the end of the file or above kMaxHeaderBytes, a header
// that is not a JSON object, duplicate names, unknown dtypes or fields,
// a byte range that does not match dtype x shape, offsets that overlap, leave
// gaps or do not start at 0, and a data section whose size differs from the
// last offset. Files are memory-mapped, so large checkpoints are not copied.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/core/tensor_map.h"

namespace fedtune {

// Same bound as the reference implementation: headers above 100 MB are refused
// before anything is allocated for them.
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

using SafetensorsMetadata = std::map<std::string, std::string>;

// One tensor's entry in a header.
struct TensorEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data section
  uint64_t end = 0;
};

// A validated header: entries in file order (sorted by begin offset).
struct SafetensorsHeader {
  std::vector<TensorEntry> entries;
  SafetensorsMetadata metadata;
  uint64_t data_offset = 0;  // 8 + N: where the data section starts in the file
};

// Validates the whole file image `file` (header and sizes; tensor values are
// not inspected) and returns its header.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const std::byte> file);

// A read-only, validated safetensors file. Tensor views stay valid as long as
// the SafetensorsFile lives.
class SafetensorsFile {
 public:
  // Memory-maps and validates `path`. NOT_FOUND if it does not exist.
  static absl::StatusOr<SafetensorsFile> Open(const std::string& path);
  // Takes ownership of an in-memory file image (for example a received
  // transfer) and validates it.
  static absl::StatusOr<SafetensorsFile> FromBytes(std::string bytes);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::vector<TensorEntry>& entries() const { return header_.entries; }
  const SafetensorsMetadata& metadata() const { return header_.metadata; }
  // The entry named `name`, or nullptr.
  const TensorEntry* Find(std::string_view name) const;
  // The raw little-endian bytes of `entry`, which must come from this file.
  std::span<const std::byte> Bytes(const TensorEntry& entry) const;
  // An owning copy of one tensor; NOT_FOUND if absent.
  absl::StatusOr<Tensor> Read(std::string_view name) const;
  // Owning copies of every tensor.
  TensorMap ReadAll() const;

 private:
  struct Storage;
  SafetensorsFile(std::unique_ptr<Storage> storage, SafetensorsHeader header);
  std::unique_ptr<Storage> storage_;
  SafetensorsHeader header_;
};

// The file image of `tensors` (in name order) with `metadata`. The header is
// padded with spaces to a multiple of 8 bytes so the data section is aligned.
// INVALID_ARGUMENT if a tensor's byte count does not match dtype x shape or a
// name is empty or "__metadata__".
absl::StatusOr<std::string> SerializeSafetensors(const TensorMap& tensors,
                                                 const SafetensorsMetadata& metadata = {});

// Writes SerializeSafetensors(...) to `path` atomically (temporary file in the
// same directory, fsync, rename; see WriteFileAtomically), so a crash never
// leaves a partial file.
absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors,
                              const SafetensorsMetadata& metadata = {});

}  // namespace fedtune
