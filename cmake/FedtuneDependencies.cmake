# Every find_package of the project, in one place. All of these come from
# Debian 12 packages (deploy/install-deps.sh); with FEDTUNE_MODEL_ONLY only
# LibTorch, abseil and header-only libraries are needed.
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_package(Threads REQUIRED)
find_package(Torch REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(OpenSSL 3 REQUIRED COMPONENTS Crypto)

# The distribution's python3 (with python3-torch, python3-sklearn) is the
# reference for tests and benchmarks; prefer it over any interpreter earlier
# on PATH. FEDTUNE_PYTHON3=... overrides (a GPU machine's own python).
find_program(FEDTUNE_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
find_program(FEDTUNE_PYTHON3 NAMES python3)

if(FEDTUNE_BUILD_TESTS)
  find_package(GTest CONFIG REQUIRED)
  include(GoogleTest)
endif()

if(NOT FEDTUNE_MODEL_ONLY)
  find_package(fmt REQUIRED)
  find_package(spdlog REQUIRED)
  find_package(tomlplusplus REQUIRED)
  find_package(Protobuf REQUIRED)
  find_package(gRPC CONFIG REQUIRED)
  find_package(DCMTK CONFIG REQUIRED)
  find_package(ZLIB REQUIRED)  # (DCMTK's own dependency) ingest bounds deflated datasets before DCMTK inflates them
  find_package(SQLite3 REQUIRED)
  find_package(CLI11 CONFIG REQUIRED)
  find_package(OpenSSL 3 REQUIRED COMPONENTS SSL)
  # cpp-httplib ships a pkg-config file only; it carries the CPPHTTPLIB_*
  # definitions (OpenSSL, zlib, brotli) the library was compiled with.
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(CPP_HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib>=0.11)
  # Burned-in text: Tesseract (with Leptonica) reads it at ingest; FreeType
  # prints it into synthetic images with a real font.
  pkg_check_modules(TESSERACT REQUIRED IMPORTED_TARGET tesseract>=4 lept)
  find_package(Freetype REQUIRED)
endif()

# LibTorch's exported flags are not ours to police: its headers are SYSTEM.
if(TARGET torch)
  get_target_property(_torch_inc torch INTERFACE_INCLUDE_DIRECTORIES)
  if(_torch_inc)
    set_target_properties(torch PROPERTIES INTERFACE_SYSTEM_INCLUDE_DIRECTORIES "${_torch_inc}")
  endif()
endif()
