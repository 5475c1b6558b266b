// The `--json` convention of fedtune's command-line programs, for messages
// of the wire protocol: every field present (defaults included), under its
// proto name; numbers as JSON numbers (64-bit integers too); an enum as the
// lower-case word after its type's prefix (JOB_STATE_SUCCEEDED ->
// "succeeded"); null for what is not a number: a count a site withheld
// (suppressed, -1 in a dataset summary) and an undefined metric (NaN).
// fedtune-site writes its own JSON by the same rules.
#pragma once

#include <google/protobuf/message.h>

#include <nlohmann/json.hpp>

namespace fedtune::cli {

nlohmann::json ProtoJson(const google::protobuf::Message& message);

}  // namespace fedtune::cli
