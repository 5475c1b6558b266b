#include "common/core/config.h"

#include <toml++/toml.h>

#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/core/file_io.h"
#include "common/core/status.h"

namespace fedtune {

struct Config::Document {
  toml::table root;
  std::string source;
};

namespace {

std::string_view TypeName(toml::node_type t) {
  switch (t) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

std::string Location(const std::string& source, const toml::source_region& where) {
  if (where.begin.line == 0) return source;
  return absl::StrCat(source, ":", where.begin.line, ":", where.begin.column);
}

// Follows a dotted path from the root; nullptr when any part is missing.
const toml::node* Resolve(const toml::table& root, std::string_view dotted) {
  const toml::node* node = &root;
  if (dotted.empty()) return node;
  for (absl::string_view part : absl::StrSplit(Sv(dotted), '.')) {
    const toml::table* t = node->as_table();
    if (t == nullptr) return nullptr;
    node = t->get(std::string_view(part.data(), part.size()));
    if (node == nullptr) return nullptr;
  }
  return node;
}

}  // namespace

absl::StatusOr<Config> Config::LoadFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileBytes(path));
  return Parse(text, path);
}

absl::StatusOr<Config> Config::Parse(std::string_view text, std::string source) {
  auto doc = std::make_shared<Document>();
  doc->source = std::move(source);
  try {
    doc->root = toml::parse(text, std::string_view(doc->source));
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(Location(doc->source, e.source()), ": ", Sv(e.description())));
  }
  return Config(std::move(doc), "");
}

const std::string& Config::source() const { return doc_->source; }

std::string Config::FullKey(std::string_view key) const {
  return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", Sv(key));
}

namespace {

// Looks up `full` and checks its type; `missing_ok` turns absence into nullptr.
absl::StatusOr<const toml::node*> Typed(const toml::table& root, const std::string& source,
                                        const std::string& full, toml::node_type want,
                                        bool missing_ok) {
  const toml::node* n = Resolve(root, full);
  if (n == nullptr) {
    if (missing_ok) return nullptr;
    return absl::InvalidArgumentError(absl::StrCat(source, ": missing required key '", full,
                                                   "' (", Sv(TypeName(want)), ")"));
  }
  const bool number_ok = want == toml::node_type::floating_point && n->is_integer();
  if (n->type() != want && !number_ok) {
    return absl::InvalidArgumentError(absl::StrCat(Location(source, n->source()), ": key '", full,
                                                   "': expected ", Sv(TypeName(want)), ", got ",
                                                   Sv(TypeName(n->type()))));
  }
  return n;
}

}  // namespace

#define FEDTUNE_CONFIG_GETTER(Name, Type, node_type, extract)                                \
  absl::StatusOr<Type> Config::Get##Name(std::string_view key) const {                       \
    ASSIGN_OR_RETURN(const toml::node* n,                                                    \
                     Typed(doc_->root, doc_->source, FullKey(key), node_type, false));       \
    return extract;                                                                          \
  }                                                                                          \
  absl::StatusOr<Type> Config::Get##Name(std::string_view key, Type fallback) const {        \
    ASSIGN_OR_RETURN(const toml::node* n,                                                    \
                     Typed(doc_->root, doc_->source, FullKey(key), node_type, true));        \
    if (n == nullptr) return fallback;                                                       \
    return extract;                                                                          \
  }

FEDTUNE_CONFIG_GETTER(String, std::string, toml::node_type::string, std::string(**n->as_string()))
FEDTUNE_CONFIG_GETTER(Int, int64_t, toml::node_type::integer, **n->as_integer())
FEDTUNE_CONFIG_GETTER(Double, double, toml::node_type::floating_point,
                      n->is_integer() ? static_cast<double>(**n->as_integer())
                                      : **n->as_floating_point())
FEDTUNE_CONFIG_GETTER(Bool, bool, toml::node_type::boolean, **n->as_boolean())
#undef FEDTUNE_CONFIG_GETTER

namespace {

absl::StatusOr<std::vector<std::string>> StringsOf(const toml::node& n, const std::string& source,
                                                   const std::string& full) {
  std::vector<std::string> out;
  const toml::array& arr = *n.as_array();
  for (size_t i = 0; i < arr.size(); ++i) {
    const toml::node& item = arr[i];
    if (!item.is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(Location(source, item.source()), ": key '",
                                                     full, "[", i, "]': expected a string, got ",
                                                     Sv(TypeName(item.type()))));
    }
    out.emplace_back(**item.as_string());
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<std::string>> Config::GetStringList(std::string_view key) const {
  const std::string full = FullKey(key);
  ASSIGN_OR_RETURN(const toml::node* n,
                   Typed(doc_->root, doc_->source, full, toml::node_type::array, false));
  return StringsOf(*n, doc_->source, full);
}

absl::StatusOr<std::vector<std::string>> Config::GetStringList(
    std::string_view key, std::vector<std::string> fallback) const {
  const std::string full = FullKey(key);
  ASSIGN_OR_RETURN(const toml::node* n,
                   Typed(doc_->root, doc_->source, full, toml::node_type::array, true));
  if (n == nullptr) return fallback;
  return StringsOf(*n, doc_->source, full);
}

absl::StatusOr<int64_t> Config::GetIntInRange(std::string_view key, int64_t lo, int64_t hi,
                                              int64_t fallback) const {
  ASSIGN_OR_RETURN(int64_t v, GetInt(key, fallback));
  if (v < lo || v > hi) {
    const toml::node* n = Resolve(doc_->root, FullKey(key));
    return absl::InvalidArgumentError(
        absl::StrCat(n ? Location(doc_->source, n->source()) : doc_->source, ": key '",
                     FullKey(key), "': ", v, " is out of range [", lo, ", ", hi, "]"));
  }
  return v;
}

absl::StatusOr<Config> Config::GetTable(std::string_view key) const {
  const std::string full = FullKey(key);
  RETURN_IF_ERROR(Typed(doc_->root, doc_->source, full, toml::node_type::table, false));
  return Config(doc_, full);
}

absl::StatusOr<Config> Config::GetTableOrEmpty(std::string_view key) const {
  const std::string full = FullKey(key);
  // A missing table reads as empty: every lookup below it is missing too, and
  // errors still name the full dotted key.
  RETURN_IF_ERROR(Typed(doc_->root, doc_->source, full, toml::node_type::table, true));
  return Config(doc_, full);
}

bool Config::Has(std::string_view key) const { return Resolve(doc_->root, FullKey(key)) != nullptr; }

absl::Status Config::RejectUnknownKeys(std::initializer_list<std::string_view> known) const {
  const toml::node* n = Resolve(doc_->root, path_);
  if (n == nullptr || !n->is_table()) return absl::OkStatus();
  for (const auto& [k, v] : *n->as_table()) {
    bool ok = false;
    std::vector<absl::string_view> names;
    for (std::string_view want : known) {
      ok = ok || k.str() == want;
      names.push_back(Sv(want));
    }
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          Location(doc_->source, v.source()), ": unknown key '", FullKey(k.str()),
          "' (known keys here: ", absl::StrJoin(names, ", "), ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace fedtune
