// Fuzzes what ingest does with one DICOM file (site-agent/ingest/ingest.h,
// Ingestor::IngestFile), in memory: load the bytes with DCMTK as ingest does,
// check the header (filters.h), de-identify (deidentifier.h), write the
// de-identified copy in the file's own transfer syntax (to a memory buffer),
// decode frame 0 (pixels.h) and fit it to a square. The last byte of the
// input picks the de-identification options and the fit mode, so the seeds
// stay plain DICOM files.
//
// The bytes are loaded from a memfd (RAM, never the disk) with loadFile, not
// from a DcmInputBufferStream: DCMTK checks an element's length against the
// bytes left only when it can seek in the stream, so from a buffer stream a
// 60-byte input that claims a 4 GiB element makes it allocate 4 GiB, which
// ingest (reading files) never does.
//
// Besides crashes, leaks and undefined behaviour, de-identification is held to
// its contract: afterwards PatientID is the pseudonym, PatientIdentityRemoved
// is YES, and no top-level attribute that Table E.1-1 removes, empties,
// replaces or shifts still holds its original value.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcvr.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "site-agent/ingest/deid_profile.h"
#include "site-agent/ingest/deidentifier.h"
#include "site-agent/ingest/filters.h"
#include "site-agent/ingest/pixels.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using namespace fedtune::ingest;

using fedtune::fuzz::Check;
using fedtune::fuzz::Report;

// The values DeidentifyDataset writes for the D action.
const std::set<std::string> kDummies = {"19000101", "000000", "19000101000000", "000Y", "0", "ANONYMIZED"};

// The original value of every top-level attribute de-identification must
// change: all but PatientID (the caller replaces it) and, under modified
// dates, values that are not DA or DT (times and time zones keep theirs).
std::map<DcmTagKey, std::string> MustChange(DcmDataset& ds, const DeidOptions& options) {
  std::map<DcmTagKey, std::string> out;
  for (unsigned long i = 0; i < ds.card(); ++i) {
    DcmElement* el = ds.getElement(i);
    const DcmTagKey tag = el->getTag();
    const DeidAction action = ResolveDeidAction(tag.getGroup(), tag.getElement(), options);
    if (action == DeidAction::kKeep || tag == DCM_PatientID || el->ident() == EVR_SQ) continue;
    if (action == DeidAction::kShiftDate && el->ident() != EVR_DA && el->ident() != EVR_DT) continue;
    OFString value;
    if (el->getOFStringArray(value).good() && !value.empty()) out[tag] = value.c_str();
  }
  return out;
}

void CheckDeidentified(DcmDataset& ds, const DeidSummary& summary, const std::map<DcmTagKey, std::string>& before) {
  OFString v;
  Check(ds.findAndGetOFStringArray(DCM_PatientID, v).good() && summary.patient_pseudonym == v.c_str(),
        "PatientID is the pseudonym");
  Check(ds.findAndGetOFStringArray(DCM_PatientIdentityRemoved, v).good() && v == "YES", "PatientIdentityRemoved YES");
  for (const auto& [tag, original] : before) {
    DcmElement* el = nullptr;
    if (ds.findAndGetElement(tag, el).bad() || el == nullptr) continue;  // removed
    if (el->getOFStringArray(v).bad() || v.empty()) continue;            // emptied
    if (kDummies.count(v.c_str()) > 0) continue;                         // dummy
    if (original == v.c_str()) {
      // The tag and VR only: values may identify a patient.
      std::fprintf(stderr, "de-identification kept the value of (%04x,%04x) VR %s\n", tag.getGroup(), tag.getElement(),
                   DcmVR(el->ident()).getVRName());
      std::abort();
    }
  }
}

// The input as a file that lives in memory: /proc/self/fd/<memfd>.
const std::string& InputFile(const uint8_t* data, size_t size) {
  static const int fd = memfd_create("fuzz-input.dcm", 0);
  static const std::string path = "/proc/self/fd/" + std::to_string(fd);
  Check(fd >= 0 && ftruncate(fd, 0) == 0, "memfd");
  Check(pwrite(fd, data, size, 0) == static_cast<ssize_t>(size), "memfd write");
  return path;
}

// The de-identified copy ingest keeps (saveFile in the original transfer
// syntax), written to memory.
void WriteCopy(DcmFileFormat& dicom, E_TransferSyntax xfer) {
  std::vector<char> buffer(64 * 1024);
  DcmOutputBufferStream out(buffer.data(), buffer.size());
  dicom.transferInit();
  OFCondition c;
  do {
    c = dicom.write(out, xfer, EET_ExplicitLength, nullptr, EGL_recalcGL, EPD_noChange, 0, 0, 0, EWM_createNewMeta);
    void* chunk = nullptr;
    offile_off_t length = 0;
    out.flushBuffer(chunk, length);
  } while (c == EC_StreamNotifyClient);
  dicom.transferEnd();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool registered = (RegisterDecoders(), true);
  (void)registered;
  if (size == 0) return 0;

  DcmFileFormat dicom;
  const OFCondition read =
      dicom.loadFile(InputFile(data, size).c_str(), EXS_Unknown, EGL_noChange, DCM_MaxReadLength, ERM_autoDetect);
  Report("load", read.good() ? absl::OkStatus() : absl::InvalidArgumentError(read.text()));
  if (read.bad()) return 0;
  DcmDataset& ds = *dicom.getDataset();

  // The production filters, then filters that let any modality and small
  // sizes through to de-identification and decoding, but keep the bounds that
  // stop decompression bombs (smaller ones: decoding a 16384 x 16384 image
  // runs the same code as a 1024 x 1024 one, a thousand times slower).
  (void)CheckHeader(ds, FilterOptions{});
  FilterOptions filters;
  OFString modality;
  ds.findAndGetOFString(DCM_Modality, modality);
  filters.modalities = {"CR", "DX", modality.c_str()};
  filters.min_rows = filters.min_columns = 1;
  filters.max_rows = filters.max_columns = 1024;
  filters.max_frames = 4;
  filters.max_decoded_bytes = int64_t{8} << 20;
  if (auto q = CheckHeader(ds, filters)) {
    Report("header", absl::FailedPreconditionError(q->detail));
    return 0;
  }

  const uint8_t flags = data[size - 1];
  DeidOptions options;
  options.retain_patient_characteristics = flags & 1;
  options.retain_device_identity = flags & 2;
  options.retain_institution_identity = flags & 4;
  options.modified_dates = flags & 8;
  options.clean_descriptors = flags & 16;
  const FitMode fit = flags & 32 ? FitMode::kCrop : FitMode::kPad;

  const std::map<DcmTagKey, std::string> before = MustChange(ds, options);
  static const std::vector<uint8_t> kSiteKey(32, 0x5a);
  auto deid = DeidentifyDataset(ds, kSiteKey, options);
  Report("de-identification", deid.status());
  if (!deid.ok()) return 0;
  CheckDeidentified(ds, *deid, before);
  WriteCopy(dicom, ds.getOriginalXfer());

  auto gray = DecodeGray(ds);
  Report("decode", gray.status());
  if (!gray.ok()) return 0;
  Check(gray->width > 0 && gray->height > 0 &&
            gray->pixels.size() == static_cast<size_t>(gray->width) * static_cast<size_t>(gray->height),
        "a decoded image has width x height pixels");
  const GrayImage fitted = FitSquare(*gray, 64, fit);
  Check(fitted.width == 64 && fitted.height == 64 && fitted.pixels.size() == 64u * 64u, "FitSquare gives 64 x 64");
  return 0;
}
