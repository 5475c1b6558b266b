// De-identification of one DICOM dataset in place, per PS3.15 Annex E Basic
// Application Level Confidentiality Profile (deid_profile.h), recursively
// inside sequences. Identifiers are replaced with keyed HMAC-SHA256 values
// under the site's secret key, so the same patient or UID maps to the same
// pseudonym across files, and sites with different keys cannot link theirs.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "common/core/phi.h"
#include "site-agent/ingest/deid_profile.h"

class DcmDataset;  // DCMTK

namespace fedtune::ingest {

// "2.25." + the first 128 bits of HMAC-SHA256(key, "uid:" + uid) in decimal:
// a valid UID (PS3.5 B.2), stable per key.
std::string PseudonymousUid(std::span<const uint8_t> key, const std::string& uid);

// The patient's pseudonym: "P" + 24 hex characters of HMAC-SHA256(key,
// "patient:" + patient id). Same patient -> same pseudonym across studies.
std::string PatientPseudonym(std::span<const uint8_t> key, const Phi<std::string>& patient_id);

// Days (in [-3650, -1]) by which a patient's dates move under the modified
// dates option, derived from the key and the patient id: intervals between a
// patient's studies are preserved.
int DateShiftDays(std::span<const uint8_t> key, const Phi<std::string>& patient_id);

// Moves a DA ("YYYYMMDD") or the date part of a DT value by `days`; returns the
// input unchanged when it is not a valid date.
std::string ShiftDicomDate(const std::string& value, int days);

// Seconds (in [0, 86400)) by which a patient's times of day move under the
// modified dates option, derived from the key and the patient id.
int TimeShiftSeconds(std::span<const uint8_t> key, const Phi<std::string>& patient_id);

// Moves a TM value ("HH", "HHMM", "HHMMSS" or "HHMMSS.FFFFFF"; the old
// "HH:MM:SS" too) by `seconds` (>= 0) around the clock, keeping its
// precision; "" when it is not a valid time. `carry_days`, when given, is
// set to the days the shift went past midnight (0 or 1), for the date that
// goes with the time.
std::string ShiftDicomTime(const std::string& value, int seconds, int* carry_days = nullptr);

// A DT value moved as one instant: its time of day (if any) by `seconds`,
// its date by `days` plus the day the time may have passed into. A UTC
// offset suffix is kept. "" when it is not a valid date-time. A DA + TM pair
// of one item (Study Date and Study Time...) is moved the same way, so that
// the pair and a DT holding the same instant stay equal and the order of a
// patient's events is kept.
std::string ShiftDicomDateTime(const std::string& value, int days, int seconds);

struct DeidSummary {
  std::string patient_pseudonym;
  int date_shift_days = 0;    // 0 unless the modified dates option is on
  int time_shift_seconds = 0;  // likewise, for times of day
  int removed = 0;          // attributes deleted
  int emptied = 0;          // attributes made zero-length (or cleaned)
  int replaced = 0;         // UIDs, dummies and shifted dates written
};

// De-identifies `dataset` in place and marks it (PatientIdentityRemoved YES,
// DeidentificationMethod, DeidentificationMethodCodeSequence with 113100 and
// the options used, LongitudinalTemporalInformationModified). PatientID
// becomes the pseudonym. INVALID_ARGUMENT for an empty key; errors never
// contain attribute values.
absl::StatusOr<DeidSummary> DeidentifyDataset(DcmDataset& dataset, std::span<const uint8_t> key,
                                              const DeidOptions& options);

}  // namespace fedtune::ingest
