#include "site-agent/ingest/deid_profile.h"

#include <algorithm>
#include <string_view>

namespace fedtune::ingest {
namespace {

struct Row {
  uint16_t group;
  uint16_t element;
  const char* name;
  const char* basic;
  const char* rtn_uids;
  const char* rtn_full_dates;
  const char* rtn_modified_dates;
  const char* rtn_patient_chars;
  const char* rtn_device_id;
  const char* rtn_institution_id;
  const char* clean_descriptors;
  const char* clean_structured_content;
  const char* clean_graphics;
  const char* rtn_safe_private;
};

// Sorted by (group, element).
constexpr Row kTable[] = {
#include "site-agent/ingest/deid_table.inc"
};

const Row* Find(uint16_t group, uint16_t element) {
  const uint32_t key = static_cast<uint32_t>(group) << 16 | element;
  auto it = std::lower_bound(std::begin(kTable), std::end(kTable), key, [](const Row& r, uint32_t k) {
    return (static_cast<uint32_t>(r.group) << 16 | r.element) < k;
  });
  if (it == std::end(kTable) || it->group != group || it->element != element) return nullptr;
  return &*it;
}

// Default-deny: an attribute Table E.1-1 does not list is removed unless it
// is one of these, which the object needs to stay a decodable, labelled CR
// or DX image: what identifies it as such, the Image Pixel module, the
// Modality and VOI LUTs and windows, the presentation LUT, pixel spacing,
// burned-in annotation, view and laterality. Free-text explanations are
// not on it. Sorted by (group, element).
constexpr uint32_t kKeptOutsideTheTable[] = {
    0x00080005,  // Specific Character Set
    0x00080008,  // Image Type
    0x00080016,  // SOP Class UID
    0x00080060,  // Modality
    0x00080068,  // Presentation Intent Type
    0x00180015,  // Body Part Examined
    0x00181164,  // Imager Pixel Spacing
    0x00185101,  // View Position
    0x00200020,  // Patient Orientation
    0x00200060,  // Laterality
    0x00200062,  // Image Laterality
    0x00280002,  // Samples per Pixel
    0x00280004,  // Photometric Interpretation
    0x00280006,  // Planar Configuration
    0x00280008,  // Number of Frames
    0x00280010,  // Rows
    0x00280011,  // Columns
    0x00280030,  // Pixel Spacing
    0x00280034,  // Pixel Aspect Ratio
    0x00280100,  // Bits Allocated
    0x00280101,  // Bits Stored
    0x00280102,  // High Bit
    0x00280103,  // Pixel Representation
    0x00280106,  // Smallest Image Pixel Value
    0x00280107,  // Largest Image Pixel Value
    0x00280120,  // Pixel Padding Value
    0x00280121,  // Pixel Padding Range Limit
    0x00280301,  // Burned In Annotation
    0x00281040,  // Pixel Intensity Relationship
    0x00281041,  // Pixel Intensity Relationship Sign
    0x00281050,  // Window Center
    0x00281051,  // Window Width
    0x00281052,  // Rescale Intercept
    0x00281053,  // Rescale Slope
    0x00281054,  // Rescale Type
    0x00281056,  // VOI LUT Function
    0x00282110,  // Lossy Image Compression
    0x00282112,  // Lossy Image Compression Ratio
    0x00282114,  // Lossy Image Compression Method
    0x00283000,  // Modality LUT Sequence
    0x00283002,  // LUT Descriptor
    0x00283004,  // Modality LUT Type
    0x00283006,  // LUT Data
    0x00283010,  // VOI LUT Sequence
    0x20500020,  // Presentation LUT Shape
    0x7FE00010,  // Pixel Data
};

bool KeptOutsideTheTable(uint16_t group, uint16_t element) {
  const uint32_t key = static_cast<uint32_t>(group) << 16 | element;
  return std::binary_search(std::begin(kKeptOutsideTheTable), std::end(kKeptOutsideTheTable), key);
}

DeidAction FromBasic(std::string_view a) {
  if (a == "X") return DeidAction::kRemove;
  if (a == "Z" || a == "X/Z" || a == "Z/D" || a == "X/Z/D") return DeidAction::kEmpty;
  if (a == "D" || a == "X/D") return DeidAction::kDummy;
  if (a == "U" || a == "X/Z/U*") return DeidAction::kReplaceUid;
  if (a == "K") return DeidAction::kKeep;
  return DeidAction::kRemove;  // an action this table does not know: the safe choice
}

}  // namespace

std::string_view DeidActionName(DeidAction a) {
  switch (a) {
    case DeidAction::kKeep: return "keep";
    case DeidAction::kRemove: return "remove";
    case DeidAction::kEmpty: return "empty";
    case DeidAction::kDummy: return "dummy";
    case DeidAction::kReplaceUid: return "replace-uid";
    case DeidAction::kShiftDate: return "shift-date";
    case DeidAction::kClean: return "clean";
  }
  return "remove";
}

DeidAction ResolveDeidAction(uint16_t group, uint16_t element, const DeidOptions& o) {
  if (group % 2 == 1) return DeidAction::kRemove;                // private attributes
  if ((group & 0xFF00) == 0x5000) return DeidAction::kRemove;    // curves (retired)
  if ((group & 0xFF00) == 0x6000) return DeidAction::kRemove;    // overlays
  const Row* r = Find(group, element);
  if (r == nullptr) return KeptOutsideTheTable(group, element) ? DeidAction::kKeep : DeidAction::kRemove;
  // An option that is on and names an action for this attribute overrides the
  // Basic Profile (PS3.15 E.3).
  auto opt = [](bool on, std::string_view action) { return on && !action.empty(); };
  if (opt(o.modified_dates, r->rtn_modified_dates)) {
    return std::string_view(r->rtn_modified_dates) == "K" ? DeidAction::kKeep : DeidAction::kShiftDate;
  }
  // "K" keeps; "C" asks for the value to be cleaned of identifying
  // information, which for free text fedtune does by emptying it (PS3.15
  // E.3.5 allows it), never by keeping it.
  for (const char* action : {o.retain_patient_characteristics ? r->rtn_patient_chars : "",
                             o.retain_device_identity ? r->rtn_device_id : "",
                             o.retain_institution_identity ? r->rtn_institution_id : ""}) {
    if (std::string_view(action) == "K") return DeidAction::kKeep;
    if (std::string_view(action) == "C") return DeidAction::kClean;
  }
  if (opt(o.clean_descriptors, r->clean_descriptors)) return DeidAction::kClean;
  return FromBasic(r->basic);
}

std::vector<DeidMethodCode> DeidMethodCodes(const DeidOptions& o) {
  std::vector<DeidMethodCode> codes = {{"113100", "Basic Application Confidentiality Profile"}};
  if (o.clean_descriptors) codes.push_back({"113105", "Clean Descriptors Option"});
  if (o.modified_dates) codes.push_back({"113107", "Retain Longitudinal Temporal Information Modified Dates Option"});
  if (o.retain_patient_characteristics) codes.push_back({"113108", "Retain Patient Characteristics Option"});
  if (o.retain_device_identity) codes.push_back({"113109", "Retain Device Identity Option"});
  if (o.retain_institution_identity) codes.push_back({"113112", "Retain Institution Identity Option"});
  return codes;
}

size_t DeidTableSize() { return std::size(kTable); }

std::vector<std::pair<uint16_t, uint16_t>> KeptOutsideTheTableList() {
  std::vector<std::pair<uint16_t, uint16_t>> out;
  for (uint32_t k : kKeptOutsideTheTable) out.emplace_back(static_cast<uint16_t>(k >> 16), static_cast<uint16_t>(k));
  return out;
}

}  // namespace fedtune::ingest
