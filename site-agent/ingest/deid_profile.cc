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
  if (r == nullptr) return DeidAction::kKeep;
  // An option that is on and names an action for this attribute overrides the
  // Basic Profile (PS3.15 E.3).
  auto opt = [](bool on, std::string_view action) { return on && !action.empty(); };
  if (opt(o.modified_dates, r->rtn_modified_dates)) {
    return std::string_view(r->rtn_modified_dates) == "K" ? DeidAction::kKeep : DeidAction::kShiftDate;
  }
  if (opt(o.retain_patient_characteristics, r->rtn_patient_chars) ||
      opt(o.retain_device_identity, r->rtn_device_id) ||
      opt(o.retain_institution_identity, r->rtn_institution_id)) {
    return DeidAction::kKeep;
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

}  // namespace fedtune::ingest
