#include "common/core/version.h"

namespace fedtune {

const char* FedtuneVersion() { return FEDTUNE_VERSION; }

}  // namespace fedtune
