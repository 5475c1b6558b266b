// Small POSIX file helpers with absl::Status errors that name the path.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fedtune {

// Reads a whole file. NOT_FOUND if it does not exist, PERMISSION_DENIED if it
// cannot be opened, DATA_LOSS on a read error.
absl::StatusOr<std::string> ReadFileBytes(const std::string& path);

// Writes `bytes` to `path` so that readers see the old file or the new one,
// never a partial one: a temporary file in the same directory is written,
// fsync'ed and renamed over `path`, then the directory is fsync'ed.
// `mode` is the new file's permission bits (0600 for secrets).
absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes,
                                 unsigned mode = 0644);

// A read-only memory mapping of a whole file. An empty file maps to an empty
// span. Not copyable; movable.
class MappedFile {
 public:
  static absl::StatusOr<MappedFile> Open(const std::string& path);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  MappedFile(const std::byte* data, size_t size) : data_(data), size_(size) {}
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace fedtune
