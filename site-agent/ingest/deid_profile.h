// What DICOM PS3.15 Annex E's Basic Application Level Confidentiality Profile
// does to each attribute, with fedtune's options. Pure logic (no DCMTK): the
// table is fedtune's own copy of PS3.15 Table E.1-1 (deid_table.inc).
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace fedtune::ingest {

// The profile options fedtune supports (PS3.15 E.3), all off by default.
struct DeidOptions {
  bool retain_patient_characteristics = false;  // E.3.6: sex, age, size, weight...
  bool retain_device_identity = false;          // E.3.7: station, serial numbers
  bool retain_institution_identity = false;     // E.3.8
  bool modified_dates = false;                  // E.3.6 "modified dates": shift per patient
  bool clean_descriptors = false;               // E.3.5: keep descriptions after cleaning
};

// What to do with one attribute.
enum class DeidAction {
  kKeep,
  kRemove,      // X
  kEmpty,       // Z: present, zero length (an empty sequence for SQ)
  kDummy,       // D: a non-identifying value of the same VR
  kReplaceUid,  // U: 2.25.<keyed HMAC of the original UID>
  kShiftDate,   // C under "modified dates": DA/DT moved by the patient's shift
  kClean,       // C on descriptors: fedtune cannot clean free text, so it empties it
};

std::string_view DeidActionName(DeidAction a);

// The action for attribute (group, element), top-level or inside a sequence.
// Private groups (odd), curves (50xx) and overlays (60xx) are removed; an
// attribute the table does not list is removed too (default-deny), unless
// it is on the short list an image needs to stay a decodable, labelled CR/DX
// object (KeptOutsideTheTableList). Compound Basic Profile actions
// resolve to the conservative choice that keeps a CR/DX object valid:
// X/Z -> Z, X/D -> D, Z/D -> Z, X/Z/D -> Z, X/Z/U* -> U (sequences: recurse).
DeidAction ResolveDeidAction(uint16_t group, uint16_t element, const DeidOptions& options);

// PS3.16 CID 7050 codes for DeidentificationMethodCodeSequence: 113100 (Basic
// Profile) followed by one code per option in use.
struct DeidMethodCode {
  const char* value;
  const char* meaning;
};
std::vector<DeidMethodCode> DeidMethodCodes(const DeidOptions& options);

// Number of attributes in the built-in table (for tests and `stats`).
size_t DeidTableSize();

// The (group, element) of every attribute kept although Table E.1-1 does not
// list it (pixel module, LUTs, windows, view, laterality...; see the .cc).
std::vector<std::pair<uint16_t, uint16_t>> KeptOutsideTheTableList();

}  // namespace fedtune::ingest
