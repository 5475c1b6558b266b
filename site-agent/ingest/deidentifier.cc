#include "site-agent/ingest/deidentifier.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdatset.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcelem.h>
#include <dcmtk/dcmdata/dcitem.h>
#include <dcmtk/dcmdata/dcsequen.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/core/hashing.h"

namespace fedtune::ingest {
namespace {

// Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant's
// civil-date algorithms, public domain).
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, unsigned* m, unsigned* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = static_cast<int64_t>(yoe) + era * 400 + (*m <= 2);
}

// Decimal of a 128-bit big-endian number.
std::string Decimal128(const uint8_t* bytes) {
  std::vector<uint32_t> n(bytes, bytes + 16);  // base-256 digits
  std::string out;
  bool nonzero = true;
  while (nonzero) {
    uint32_t rem = 0;
    nonzero = false;
    for (auto& digit : n) {
      const uint32_t cur = rem * 256 + digit;
      digit = cur / 10;
      rem = cur % 10;
      nonzero = nonzero || digit != 0;
    }
    out.push_back(static_cast<char>('0' + rem));
  }
  return std::string(out.rbegin(), out.rend());
}

// A non-identifying value of `vr` for the D action.
OFString DummyFor(DcmEVR vr) {
  switch (vr) {
    case EVR_DA: return "19000101";
    case EVR_TM: return "000000";
    case EVR_DT: return "19000101000000";
    case EVR_AS: return "000Y";
    case EVR_IS:
    case EVR_DS: return "0";
    case EVR_CS: return "ANONYMIZED";
    default: return "ANONYMIZED";
  }
}

class Walker {
 public:
  Walker(std::span<const uint8_t> key, const DeidOptions& options, int shift_days, int shift_seconds,
         DeidSummary* summary)
      : key_(key), options_(options), shift_(shift_days), shift_seconds_(shift_seconds), summary_(summary) {}

  // `depth` 0 is the dataset itself; items of sequences are deeper.
  void Item(DcmItem& item, int depth = 0) {
    const std::vector<DcmTagKey> moved = options_.modified_dates ? ShiftPairs(item) : std::vector<DcmTagKey>{};
    // Backwards, so removing an element does not move the ones still to visit.
    for (long i = static_cast<long>(item.card()) - 1; i >= 0; --i) {
      DcmElement* el = item.getElement(static_cast<unsigned long>(i));
      if (el == nullptr) continue;
      const DcmTagKey tag = el->getTag();
      if (std::find(moved.begin(), moved.end(), tag) != moved.end()) continue;
      DeidAction action = ResolveDeidAction(tag.getGroup(), tag.getElement(), options_);
      // The top-level PatientID is replaced by the caller with the pseudonym;
      // one inside a sequence (another system's identifier) goes by the table.
      if (tag == DCM_PatientID && depth == 0) action = DeidAction::kKeep;
      if (el->ident() == EVR_UN &&
          (action == DeidAction::kDummy || action == DeidAction::kReplaceUid || action == DeidAction::kShiftDate)) {
        el = Typed(item, static_cast<unsigned long>(i), el);
        if (el == nullptr) {  // no text value to replace: not kept either
          delete item.remove(static_cast<unsigned long>(i));
          ++summary_->removed;
          continue;
        }
      }
      if (el->ident() == EVR_SQ) {
        Sequence(item, static_cast<unsigned long>(i), static_cast<DcmSequenceOfItems*>(el), action, depth);
      } else {
        Element(item, static_cast<unsigned long>(i), el, action);
      }
    }
  }

 private:
  void Sequence(DcmItem& parent, unsigned long index, DcmSequenceOfItems* sq, DeidAction action, int depth) {
    switch (action) {
      case DeidAction::kRemove:
        delete parent.remove(index);
        ++summary_->removed;
        return;
      case DeidAction::kEmpty:
      case DeidAction::kDummy:  // a dummy sequence is an empty one
      case DeidAction::kClean:
        sq->clear();
        ++summary_->emptied;
        return;
      default:  // keep / replace UIDs / shift dates: the items are de-identified in turn
        for (unsigned long k = 0; k < sq->card(); ++k) Item(*sq->getItem(k), depth + 1);
    }
  }

  // Under modified dates, the DA + TM pairs of `item` that both hold one
  // value move as one instant (the time's pass over midnight carried into
  // the date); returns the tags it wrote, which the walk then leaves alone.
  std::vector<DcmTagKey> ShiftPairs(DcmItem& item) {
    static const std::pair<DcmTagKey, DcmTagKey> kPairs[] = {
        {DCM_InstanceCreationDate, DCM_InstanceCreationTime},
        {DCM_StudyDate, DCM_StudyTime},
        {DCM_SeriesDate, DCM_SeriesTime},
        {DCM_AcquisitionDate, DCM_AcquisitionTime},
        {DCM_ContentDate, DCM_ContentTime},
        {DCM_PatientBirthDate, DCM_PatientBirthTime},
        {DCM_DateOfSecondaryCapture, DCM_TimeOfSecondaryCapture},
        {DCM_DateOfLastCalibration, DCM_TimeOfLastCalibration},
        {DCM_ScheduledProcedureStepStartDate, DCM_ScheduledProcedureStepStartTime},
        {DCM_ScheduledProcedureStepEndDate, DCM_ScheduledProcedureStepEndTime},
        {DCM_PerformedProcedureStepStartDate, DCM_PerformedProcedureStepStartTime},
        {DCM_PerformedProcedureStepEndDate, DCM_PerformedProcedureStepEndTime},
        {DCM_RETIRED_StudyVerifiedDate, DCM_RETIRED_StudyVerifiedTime},
        {DCM_RETIRED_StudyReadDate, DCM_RETIRED_StudyReadTime},
        {DCM_RETIRED_ScheduledStudyStartDate, DCM_RETIRED_ScheduledStudyStartTime},
        {DCM_AdmittingDate, DCM_AdmittingTime},
    };
    std::vector<DcmTagKey> moved;
    for (const auto& [date_tag, time_tag] : kPairs) {
      if (ResolveDeidAction(date_tag.getGroup(), date_tag.getElement(), options_) != DeidAction::kShiftDate ||
          ResolveDeidAction(time_tag.getGroup(), time_tag.getElement(), options_) != DeidAction::kShiftDate) {
        continue;
      }
      DcmElement* da = nullptr;
      DcmElement* tm = nullptr;
      if (item.findAndGetElement(date_tag, da, OFFalse).bad() || item.findAndGetElement(time_tag, tm, OFFalse).bad() ||
          da->ident() != EVR_DA || tm->ident() != EVR_TM || da->getVM() != 1 || tm->getVM() != 1) {
        continue;  // not a pair of single values: each goes its own way below
      }
      OFString date, time;
      if (da->getOFString(date, 0).bad() || tm->getOFString(time, 0).bad()) continue;
      int carry = 0;
      const std::string t = ShiftDicomTime(time.c_str(), shift_seconds_, &carry);
      const std::string d = ShiftDicomDate(date.c_str(), shift_ + carry);
      // What cannot be shifted is emptied, never kept.
      da->putString(d == date.c_str() ? "" : d.c_str());
      tm->putString(t.c_str());
      summary_->replaced += 2;
      moved.push_back(date_tag);
      moved.push_back(time_tag);
    }
    return moved;
  }

  // An attribute written with VR UN (by a writer that did not know it) holds
  // its value as raw bytes, which DCMTK reads and writes as hexadecimal: a
  // UID would be pseudonymised byte by byte and a date never shifted. It is
  // replaced by the same value under its dictionary VR; nullptr when the
  // dictionary has no text VR for it.
  static DcmElement* Typed(DcmItem& item, unsigned long index, DcmElement* el) {
    const DcmTag tag(el->getTag().getGroup(), el->getTag().getElement());
    const DcmEVR vr = tag.getEVR();
    if (vr == EVR_UN || vr == EVR_UNKNOWN || vr == EVR_UNKNOWN2B || vr == EVR_SQ || vr == EVR_OB || vr == EVR_OW ||
        vr == EVR_ox) {
      return nullptr;
    }
    Uint8* raw = nullptr;
    std::string text;
    if (el->getUint8Array(raw).good() && raw != nullptr) text.assign(reinterpret_cast<const char*>(raw), el->getLength());
    while (!text.empty() && (text.back() == '\0' || text.back() == ' ')) text.pop_back();
    DcmElement* typed = DcmItem::newDicomElement(tag);
    if (typed == nullptr || typed->ident() != vr || typed->putString(text.c_str()).bad()) {
      delete typed;
      return nullptr;
    }
    delete item.remove(index);
    if (item.insert(typed, OFTrue).bad()) {
      delete typed;
      return nullptr;
    }
    return typed;
  }

  void Element(DcmItem& parent, unsigned long index, DcmElement* el, DeidAction action) {
    OFString value;
    switch (action) {
      case DeidAction::kKeep:
        return;
      case DeidAction::kRemove:
        delete parent.remove(index);
        ++summary_->removed;
        return;
      case DeidAction::kEmpty:
      case DeidAction::kClean:
        el->clear();
        ++summary_->emptied;
        return;
      case DeidAction::kDummy:
        el->putOFStringArray(DummyFor(el->ident()));
        ++summary_->replaced;
        return;
      case DeidAction::kReplaceUid: {
        if (el->getOFStringArray(value).bad() || value.empty()) return;
        std::vector<std::string> out;
        for (absl::string_view uid : absl::StrSplit(absl::string_view(value.c_str(), value.length()), '\\')) {
          out.push_back(PseudonymousUid(key_, std::string(uid)));
        }
        el->putOFStringArray(absl::StrJoin(out, "\\").c_str());
        ++summary_->replaced;
        return;
      }
      case DeidAction::kShiftDate: {
        // Dates move by the patient's days, times of day by the patient's
        // seconds (both parts of a DT likewise); anything else with this
        // action is emptied rather than kept.
        const DcmEVR vr = el->ident();
        if (vr != EVR_DA && vr != EVR_DT && vr != EVR_TM) {
          el->clear();
          ++summary_->emptied;
          return;
        }
        if (el->getOFStringArray(value).bad() || value.empty()) return;
        std::vector<std::string> out;
        for (absl::string_view v : absl::StrSplit(absl::string_view(value.c_str(), value.length()), '\\')) {
          const std::string text(v);
          if (vr == EVR_TM) {
            out.push_back(ShiftDicomTime(text, shift_seconds_));
          } else if (vr == EVR_DT) {
            out.push_back(ShiftDicomDateTime(text, shift_, shift_seconds_));
          } else {
            std::string shifted = ShiftDicomDate(text, shift_);
            // A value that is not a date cannot be shifted; it must not survive either.
            out.push_back(shifted == v ? std::string() : shifted);
          }
        }
        el->putOFStringArray(absl::StrJoin(out, "\\").c_str());
        ++summary_->replaced;
        return;
      }
    }
  }

  std::span<const uint8_t> key_;
  const DeidOptions& options_;
  int shift_;
  int shift_seconds_;
  DeidSummary* summary_;
};

}  // namespace

std::string PseudonymousUid(std::span<const uint8_t> key, const std::string& uid) {
  const Digest d = HmacSha256(key, "uid:" + uid);
  return "2.25." + Decimal128(d.data());
}

std::string PatientPseudonym(std::span<const uint8_t> key, const Phi<std::string>& patient_id) {
  return "P" + ToHex(HmacSha256(key, "patient:" + patient_id.reveal())).substr(0, 24);
}

int DateShiftDays(std::span<const uint8_t> key, const Phi<std::string>& patient_id) {
  return -1 - static_cast<int>(DigestPrefix64(HmacSha256(key, "dateshift:" + patient_id.reveal())) % 3650);
}

std::string ShiftDicomDate(const std::string& value, int days) {
  if (value.size() < 8) return value;
  unsigned y = 0, m = 0, d = 0;
  for (int i = 0; i < 8; ++i) {
    if (value[static_cast<size_t>(i)] < '0' || value[static_cast<size_t>(i)] > '9') return value;
  }
  y = static_cast<unsigned>(std::stoi(value.substr(0, 4)));
  m = static_cast<unsigned>(std::stoi(value.substr(4, 2)));
  d = static_cast<unsigned>(std::stoi(value.substr(6, 2)));
  if (m < 1 || m > 12 || d < 1 || d > 31) return value;
  int64_t ny;
  unsigned nm, nd;
  CivilFromDays(DaysFromCivil(y, m, d) + days, &ny, &nm, &nd);
  if (ny < 0 || ny > 9999) return value;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04u%02u%02u", static_cast<unsigned>(ny), nm, nd);
  return std::string(buf) + value.substr(8);
}

int TimeShiftSeconds(std::span<const uint8_t> key, const Phi<std::string>& patient_id) {
  return static_cast<int>(DigestPrefix64(HmacSha256(key, "timeshift:" + patient_id.reveal())) % 86400);
}

std::string ShiftDicomTime(const std::string& value, int seconds, int* carry_days) {
  if (carry_days != nullptr) *carry_days = 0;
  // Digits of HH[MM[SS]] (colons of the old form skipped), then the fraction.
  std::string digits, fraction;
  size_t i = 0;
  for (; i < value.size() && value[i] != '.'; ++i) {
    const char c = value[i];
    if (c == ':') continue;
    if (c < '0' || c > '9') return "";
    digits.push_back(c);
  }
  if (i < value.size()) {
    fraction = value.substr(i);  // ".FFFFFF"
    for (size_t j = 1; j < fraction.size(); ++j) {
      if (fraction[j] < '0' || fraction[j] > '9') return "";
    }
    if (digits.size() != 6) return "";  // a fraction needs seconds
  }
  if (digits.size() != 2 && digits.size() != 4 && digits.size() != 6) return "";
  const int hh = std::stoi(digits.substr(0, 2));
  const int mm = digits.size() >= 4 ? std::stoi(digits.substr(2, 2)) : 0;
  const int ss = digits.size() >= 6 ? std::stoi(digits.substr(4, 2)) : 0;
  if (hh > 23 || mm > 59 || ss > 60) return "";
  const int64_t instant = int64_t{hh} * 3600 + mm * 60 + std::min(ss, 59) + seconds;
  const int t = static_cast<int>((instant % 86400 + 86400) % 86400);
  if (carry_days != nullptr) *carry_days = static_cast<int>((instant - t) / 86400);
  char buf[16];
  std::snprintf(buf, sizeof buf, "%02d%02d%02d", t / 3600, t / 60 % 60, t % 60);
  return std::string(buf, digits.size()) + fraction;
}

std::string ShiftDicomDateTime(const std::string& value, int days, int seconds) {
  // YYYYMMDD[HH[MM[SS[.F]]]][&ZZXX]; a year or month alone cannot be shifted.
  std::string body = value, zone;
  if (const size_t z = value.find_first_of("+-", 8); z != std::string::npos) {
    body = value.substr(0, z);
    zone = value.substr(z);
  }
  if (body.size() < 8) return "";
  int carry = 0;
  std::string time;
  if (body.size() > 8) {
    time = ShiftDicomTime(body.substr(8), seconds, &carry);
    if (time.empty()) return "";
  }
  const std::string date = ShiftDicomDate(body.substr(0, 8), days + carry);
  if (date == body.substr(0, 8)) return "";
  return date + time + zone;
}

absl::StatusOr<DeidSummary> DeidentifyDataset(DcmDataset& dataset, std::span<const uint8_t> key,
                                              const DeidOptions& options) {
  if (key.empty()) return absl::InvalidArgumentError("de-identification needs the site key");
  OFString id;
  dataset.findAndGetOFStringArray(DCM_PatientID, id);
  const Phi<std::string> patient_id(std::string(id.c_str()));
  DeidSummary summary;
  summary.patient_pseudonym = PatientPseudonym(key, patient_id);
  if (options.modified_dates) {
    summary.date_shift_days = DateShiftDays(key, patient_id);
    summary.time_shift_seconds = TimeShiftSeconds(key, patient_id);
  }

  Walker(key, options, summary.date_shift_days, summary.time_shift_seconds, &summary).Item(dataset);

  auto put = [&](const DcmTagKey& tag, const std::string& value) -> absl::Status {
    if (dataset.putAndInsertString(tag, value.c_str()).bad()) {
      return absl::InternalError(absl::StrCat("cannot write attribute (", tag.getGroup(), ",", tag.getElement(), ")"));
    }
    return absl::OkStatus();
  };
  for (auto [tag, value] : {std::pair{DCM_PatientID, summary.patient_pseudonym},
                            std::pair{DCM_PatientIdentityRemoved, std::string("YES")},
                            std::pair{DCM_DeidentificationMethod, std::string("fedtune: DICOM PS3.15 E.1 Basic Profile")},
                            std::pair{DCM_LongitudinalTemporalInformationModified,
                                      std::string(options.modified_dates ? "MODIFIED" : "REMOVED")}}) {
    if (auto s = put(tag, value); !s.ok()) return s;
  }
  dataset.findAndDeleteElement(DCM_DeidentificationMethodCodeSequence);
  for (const DeidMethodCode& code : DeidMethodCodes(options)) {
    DcmItem* item = nullptr;
    if (dataset.findOrCreateSequenceItem(DCM_DeidentificationMethodCodeSequence, item, -2).bad() || item == nullptr) {
      return absl::InternalError("cannot write DeidentificationMethodCodeSequence");
    }
    item->putAndInsertString(DCM_CodeValue, code.value);
    item->putAndInsertString(DCM_CodingSchemeDesignator, "DCM");
    item->putAndInsertString(DCM_CodeMeaning, code.meaning);
  }
  return summary;
}

}  // namespace fedtune::ingest
