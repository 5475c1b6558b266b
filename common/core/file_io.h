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
// `mode` is the new file's permission bits, whatever the umask: the
// owner's alone unless a caller asks for more.
// fsyncs a directory, so that a file created in or renamed into it survives
// a crash (best effort: some filesystems refuse to sync a directory).
void SyncDirectory(const std::string& dir);

absl::Status WriteFileAtomically(const std::string& path, std::string_view bytes,
                                 unsigned mode = 0600);

// An exclusive lock on a file (flock), held while the object lives and
// released when the process dies, however it dies. The holder's
// description (`holder`, e.g. "pid 812, listening on 0.0.0.0:7443") is
// written into the file so that a second process is told who holds it:
// Acquire returns FAILED_PRECONDITION with that description.
class ExclusiveLock {
 public:
  static absl::StatusOr<ExclusiveLock> Acquire(const std::string& path, const std::string& holder);
  ExclusiveLock(ExclusiveLock&& other) noexcept;
  ExclusiveLock& operator=(ExclusiveLock&& other) noexcept;
  ExclusiveLock(const ExclusiveLock&) = delete;
  ExclusiveLock& operator=(const ExclusiveLock&) = delete;
  ~ExclusiveLock();

 private:
  explicit ExclusiveLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

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
