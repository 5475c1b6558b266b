#include "site-agent/ingest/model_input.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <sys/mman.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "site-agent/ingest/inflation.h"

namespace fedtune::ingest {
namespace {

absl::Status Refuse(QuarantineReason reason, const std::string& detail) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(QuarantineReasonName(reason)), ": ", detail));
}

}  // namespace

absl::StatusOr<ModelInput> DecodeForModel(std::string_view part10, const ModelInputOptions& o) {
  RegisterDecoders();
  FilterOptions filters = o.filters;
  filters.refuse_burned_in = false;
  if (static_cast<int64_t>(part10.size()) > filters.max_file_bytes) {
    return Refuse(QuarantineReason::kTooLarge, absl::StrCat("file of ", part10.size() >> 20,
                                                            " MiB is above the maximum of ",
                                                            filters.max_file_bytes >> 20, " MiB"));
  }
  if (part10.empty()) return Refuse(QuarantineReason::kUnreadable, "empty body: expected a DICOM file");
  const int64_t inflate_limit = 2 * filters.max_decoded_bytes;
  const Inflation inflation = MeasureInflation(part10, inflate_limit);
  if (inflation.kind == Inflation::kMeasured && inflation.bytes > inflate_limit) {
    return Refuse(QuarantineReason::kTooLarge, absl::StrCat("the deflated dataset inflates to more than ",
                                                            inflate_limit >> 20, " MiB"));
  }
  if (inflation.kind == Inflation::kUnfollowable) {
    // Fail closed, as ingest does for a deflated file it cannot measure.
    return Refuse(QuarantineReason::kUnreadable, "the file meta group cannot be followed");
  }
  // Read as a file that lives in memory (a memfd: RAM, never the disk), not
  // from a DcmInputBufferStream: DCMTK checks an element's length against the
  // bytes left only when it can seek, so from a buffer stream a few bytes that
  // claim a 4 GiB element make it allocate 4 GiB.
  const int fd = memfd_create("fedtune-predict.dcm", MFD_CLOEXEC);
  if (fd < 0) return absl::ResourceExhaustedError("cannot hold the request in memory (memfd_create)");
  struct CloseFd {
    int fd;
    ~CloseFd() { close(fd); }
  } close_fd{fd};
  size_t written = 0;
  while (written < part10.size()) {
    const ssize_t n = write(fd, part10.data() + written, part10.size() - written);
    if (n <= 0) return absl::ResourceExhaustedError("cannot hold the request in memory (memfd write)");
    written += static_cast<size_t>(n);
  }
  DcmFileFormat dicom;
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const OFCondition c = dicom.loadFile(path.c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
  if (c.bad()) return Refuse(QuarantineReason::kUnreadable, absl::StrCat("not a readable DICOM file (", c.text(), ")"));
  DcmDataset& ds = *dicom.getDataset();
  if (auto q = CheckHeader(ds, filters)) return Refuse(q->reason, q->detail);
  auto gray = DecodeGray(ds);
  if (!gray.ok()) return Refuse(QuarantineReason::kUndecodable, std::string(gray.status().message()));
  ModelInput out;
  out.size = o.image_size;
  out.pixels = ModelPixels(FitSquare(*gray, o.image_size, o.fit), o.cache_bits);
  return out;
}

}  // namespace fedtune::ingest
