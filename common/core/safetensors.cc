#include "common/core/safetensors.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <variant>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/core/file_io.h"
#include "common/core/status.h"

namespace fedtune {
namespace {

using Json = nlohmann::json;
constexpr std::string_view kMetadataKey = "__metadata__";

absl::Status Invalid(std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors: ", Sv(what)));
}

absl::StatusOr<uint64_t> NonNegativeInt(const Json& v, std::string_view what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return Invalid(absl::StrCat(Sv(what), " must be a non-negative integer, got ",
                              v.is_primitive() ? v.dump() : std::string("a ") + v.type_name()));
}

absl::StatusOr<TensorEntry> ParseEntry(const std::string& name, const Json& v) {
  const std::string where = absl::StrCat("tensor \"", name, "\"");
  if (!v.is_object()) return Invalid(absl::StrCat(where, ": entry must be an object"));
  for (const auto& [key, unused] : v.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets") {
      return Invalid(absl::StrCat(where, ": unknown field \"", key, "\""));
    }
  }
  TensorEntry e;
  e.name = name;
  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string()) {
    return Invalid(absl::StrCat(where, ": \"dtype\" must be a string"));
  }
  auto dtype = ParseDType(dt->get<std::string>());
  if (!dtype.ok()) return Invalid(absl::StrCat(where, ": ", dtype.status().message()));
  e.dtype = *dtype;

  auto shape = v.find("shape");
  if (shape == v.end() || !shape->is_array()) {
    return Invalid(absl::StrCat(where, ": \"shape\" must be an array"));
  }
  for (const Json& d : *shape) {
    ASSIGN_OR_RETURN(uint64_t dim, NonNegativeInt(d, absl::StrCat(where, ": a dimension")));
    if (dim > static_cast<uint64_t>(INT64_MAX)) return Invalid(absl::StrCat(where, ": dimension too large"));
    e.shape.push_back(static_cast<int64_t>(dim));
  }
  auto offsets = v.find("data_offsets");
  if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2) {
    return Invalid(absl::StrCat(where, ": \"data_offsets\" must be [begin, end]"));
  }
  ASSIGN_OR_RETURN(e.begin, NonNegativeInt((*offsets)[0], absl::StrCat(where, ": begin offset")));
  ASSIGN_OR_RETURN(e.end, NonNegativeInt((*offsets)[1], absl::StrCat(where, ": end offset")));
  if (e.end < e.begin) {
    return Invalid(absl::StrCat(where, ": data_offsets [", e.begin, ", ", e.end, ") end before they begin"));
  }
  auto numel = NumElements(e.shape);
  if (!numel.ok()) return Invalid(absl::StrCat(where, ": ", numel.status().message()));
  const uint64_t elem = DTypeSize(e.dtype);
  const uint64_t n = static_cast<uint64_t>(*numel);
  if (n > UINT64_MAX / elem || n * elem != e.end - e.begin) {
    return Invalid(absl::StrCat(where, ": ", Sv(DTypeName(e.dtype)), " ", ShapeString(e.shape), " needs ",
                                n > UINT64_MAX / elem ? "more" : absl::StrCat(n * elem), " bytes but data_offsets span ",
                                e.end - e.begin));
  }
  return e;
}

// Parses the header text, refusing duplicate keys at any depth (JSON allows
// them; safetensors does not, and a silent "last one wins" could hide a tensor).
absl::StatusOr<Json> ParseHeaderJson(std::string_view text) {
  std::vector<std::set<std::string>> keys_by_depth;
  std::string duplicate;
  auto on_event = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        keys_by_depth.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!keys_by_depth.empty()) keys_by_depth.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!keys_by_depth.empty() && !keys_by_depth.back().insert(parsed.get<std::string>()).second &&
            duplicate.empty()) {
          duplicate = parsed.get<std::string>();
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    Json j = Json::parse(text.begin(), text.end(), on_event);
    if (!duplicate.empty()) return Invalid(absl::StrCat("duplicate key \"", duplicate, "\" in header"));
    return j;
  } catch (const Json::exception& e) {
    return Invalid(absl::StrCat("header is not valid JSON (", e.what(), ")"));
  }
}

}  // namespace

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::span<const std::byte> file) {
  if (file.size() < 8) {
    return absl::DataLossError(absl::StrCat("safetensors: file is ", file.size(),
                                            " bytes, too short to hold the 8-byte header length"));
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = n << 8 | static_cast<uint8_t>(file[static_cast<size_t>(i)]);
  if (n > kMaxSafetensorsHeaderBytes) {
    return Invalid(absl::StrCat("header length ", n, " exceeds the limit of ", kMaxSafetensorsHeaderBytes,
                                " bytes"));
  }
  if (n > file.size() - 8) {
    return absl::DataLossError(absl::StrCat("safetensors: header length ", n,
                                            " runs past the end of the file (", file.size(), " bytes)"));
  }
  std::string_view text(reinterpret_cast<const char*>(file.data()) + 8, static_cast<size_t>(n));
  if (text.empty() || text.front() != '{') return Invalid("header must be a JSON object starting with '{'");
  ASSIGN_OR_RETURN(Json j, ParseHeaderJson(text));
  if (!j.is_object()) return Invalid("header must be a JSON object");

  SafetensorsHeader header;
  header.data_offset = 8 + n;
  for (const auto& [name, value] : j.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) return Invalid("\"__metadata__\" must be an object of strings");
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) return Invalid(absl::StrCat("metadata \"", k, "\" must be a string"));
        header.metadata.emplace(k, v.get<std::string>());
      }
      continue;
    }
    ASSIGN_OR_RETURN(TensorEntry e, ParseEntry(name, value));
    header.entries.push_back(std::move(e));
  }
  std::stable_sort(header.entries.begin(), header.entries.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected = 0;
  for (const TensorEntry& e : header.entries) {
    if (e.begin != expected) {
      return Invalid(absl::StrCat("tensor \"", e.name, "\" starts at byte ", e.begin, " but the previous one ends at ",
                                  expected, e.begin < expected ? " (overlap)" : " (gap)"));
    }
    expected = e.end;
  }
  const uint64_t data_size = file.size() - header.data_offset;
  if (data_size < expected) {
    return absl::DataLossError(absl::StrCat("safetensors: data section is ", data_size,
                                            " bytes but the header describes ", expected, " (truncated file)"));
  }
  if (data_size > expected) {
    return Invalid(absl::StrCat("data section is ", data_size, " bytes but the header describes only ", expected,
                                " (trailing bytes)"));
  }
  return header;
}

struct SafetensorsFile::Storage {
  std::variant<MappedFile, std::string> holder;
  std::span<const std::byte> bytes() const {
    if (const auto* m = std::get_if<MappedFile>(&holder)) return m->bytes();
    const auto& s = std::get<std::string>(holder);
    return std::as_bytes(std::span(s.data(), s.size()));
  }
};

SafetensorsFile::SafetensorsFile(std::unique_ptr<Storage> storage, SafetensorsHeader header)
    : storage_(std::move(storage)), header_(std::move(header)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path));
  auto storage = std::make_unique<Storage>(Storage{std::move(mapped)});
  auto header = ParseSafetensorsHeader(storage->bytes());
  if (!header.ok()) return Annotate(header.status(), path);
  return SafetensorsFile(std::move(storage), *std::move(header));
}

absl::StatusOr<SafetensorsFile> SafetensorsFile::FromBytes(std::string bytes) {
  auto storage = std::make_unique<Storage>(Storage{std::move(bytes)});
  ASSIGN_OR_RETURN(SafetensorsHeader header, ParseSafetensorsHeader(storage->bytes()));
  return SafetensorsFile(std::move(storage), std::move(header));
}

const TensorEntry* SafetensorsFile::Find(std::string_view name) const {
  for (const TensorEntry& e : header_.entries) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

std::span<const std::byte> SafetensorsFile::Bytes(const TensorEntry& entry) const {
  return storage_->bytes().subspan(header_.data_offset + entry.begin, entry.end - entry.begin);
}

absl::StatusOr<Tensor> SafetensorsFile::Read(std::string_view name) const {
  const TensorEntry* e = Find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat("safetensors: no tensor named \"", Sv(name), "\""));
  auto bytes = Bytes(*e);
  return Tensor{e->dtype, e->shape, std::vector<std::byte>(bytes.begin(), bytes.end())};
}

TensorMap SafetensorsFile::ReadAll() const {
  TensorMap out;
  for (const TensorEntry& e : header_.entries) {
    auto bytes = Bytes(e);
    out.emplace(e.name, Tensor{e.dtype, e.shape, std::vector<std::byte>(bytes.begin(), bytes.end())});
  }
  return out;
}

absl::StatusOr<std::string> SerializeSafetensors(const TensorMap& tensors, const SafetensorsMetadata& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header[std::string(kMetadataKey)] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == kMetadataKey) return Invalid(absl::StrCat("cannot name a tensor \"", name, "\""));
    auto numel = NumElements(t.shape);
    if (!numel.ok()) return Annotate(numel.status(), name);
    const uint64_t bytes = static_cast<uint64_t>(*numel) * DTypeSize(t.dtype);
    if (bytes != t.data.size()) {
      return Invalid(absl::StrCat("tensor \"", name, "\" is ", Sv(DTypeName(t.dtype)), " ", ShapeString(t.shape),
                                  " (", bytes, " bytes) but holds ", t.data.size(), " bytes"));
    }
    header[name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  out += text;
  for (const auto& [name, t] : tensors) out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size());
  return out;
}

absl::Status WriteSafetensors(const std::string& path, const TensorMap& tensors, const SafetensorsMetadata& metadata) {
  ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(tensors, metadata));
  return WriteFileAtomically(path, bytes);
}

}  // namespace fedtune
