#include "coordinator/cli/proto_json.h"

#include <google/protobuf/descriptor.h>

#include <cctype>
#include <cmath>
#include <string>

namespace fedtune::cli {
namespace {

using google::protobuf::EnumValueDescriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using google::protobuf::Reflection;

// JOB_STATE_SUCCEEDED of enum JobState -> "succeeded": the value's name
// without the prefix all of its enum's values share, in lower case.
std::string EnumWord(const EnumValueDescriptor* value) {
  const auto* type = value->type();
  std::string prefix = type->value_count() > 0 ? type->value(0)->name() : std::string();
  for (int i = 1; i < type->value_count(); ++i) {
    const std::string& other = type->value(i)->name();
    size_t n = 0;
    while (n < prefix.size() && n < other.size() && prefix[n] == other[n]) ++n;
    prefix.resize(n);
  }
  // Cut at the last underscore of the common part (JOB_STATE_ of
  // JOB_STATE_SUCCEEDED / JOB_STATE_SUBMITTED, not JOB_STATE_SU).
  const size_t cut = prefix.rfind('_');
  std::string word = value->name().substr(cut == std::string::npos ? 0 : cut + 1);
  for (char& c : word) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return word;
}

// Counts in a dataset summary use -1 for "withheld below the site's k".
bool CountsMaySuppress(const FieldDescriptor* field) {
  return field->containing_type()->full_name() == "fedtune.v1.DatasetSummary.SplitCounts" &&
         (field->cpp_type() == FieldDescriptor::CPPTYPE_INT64 || field->cpp_type() == FieldDescriptor::CPPTYPE_INT32);
}

nlohmann::json Number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

nlohmann::json Value(const Message& m, const Reflection* r, const FieldDescriptor* f, int index) {
  const bool repeated = f->is_repeated();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: {
      const int64_t v = repeated ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f);
      return CountsMaySuppress(f) && v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v);
    }
    case FieldDescriptor::CPPTYPE_INT64: {
      const int64_t v = repeated ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f);
      return CountsMaySuppress(f) && v < 0 ? nlohmann::json(nullptr) : nlohmann::json(v);
    }
    case FieldDescriptor::CPPTYPE_UINT32: return repeated ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f);
    case FieldDescriptor::CPPTYPE_UINT64: return repeated ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f);
    case FieldDescriptor::CPPTYPE_DOUBLE: return Number(repeated ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
    case FieldDescriptor::CPPTYPE_FLOAT: return Number(repeated ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
    case FieldDescriptor::CPPTYPE_BOOL: return repeated ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f);
    case FieldDescriptor::CPPTYPE_ENUM: return EnumWord(repeated ? r->GetRepeatedEnum(m, f, index) : r->GetEnum(m, f));
    case FieldDescriptor::CPPTYPE_STRING:  // (bytes fields are left out by ProtoJson)
      return repeated ? r->GetRepeatedString(m, f, index) : r->GetString(m, f);
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoJson(repeated ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f));
  }
  return nullptr;
}

}  // namespace

nlohmann::json ProtoJson(const Message& m) {
  const auto* d = m.GetDescriptor();
  const Reflection* r = m.GetReflection();
  nlohmann::json out = nlohmann::json::object();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->type() == FieldDescriptor::TYPE_BYTES) continue;  // binary payloads have no place in a listing
    if (f->is_map()) {
      nlohmann::json map = nlohmann::json::object();
      for (int k = 0; k < r->FieldSize(m, f); ++k) {
        const Message& entry = r->GetRepeatedMessage(m, f, k);
        const nlohmann::json kv = ProtoJson(entry);
        map[kv["key"].is_string() ? kv["key"].get<std::string>() : kv["key"].dump()] = kv["value"];
      }
      out[f->name()] = std::move(map);
    } else if (f->is_repeated()) {
      nlohmann::json a = nlohmann::json::array();
      for (int k = 0; k < r->FieldSize(m, f); ++k) a.push_back(Value(m, r, f, k));
      out[f->name()] = std::move(a);
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE && !r->HasField(m, f)) {
      out[f->name()] = nullptr;
    } else {
      out[f->name()] = Value(m, r, f, -1);
    }
  }
  return out;
}

}  // namespace fedtune::cli
