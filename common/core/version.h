// This build's version (the project version in the top CMakeLists.txt).
#pragma once

namespace fedtune {

const char* FedtuneVersion();

}  // namespace fedtune
