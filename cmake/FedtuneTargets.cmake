# Helpers that give every fedtune target the same rules.

# Strict warnings on our own code only; third-party and generated headers come
# in as SYSTEM includes so they never trip -Werror.
function(fedtune_strict target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror)
  # g++ 12 at -O3 (Release) reports -Wrestrict inside libstdc++'s own
  # std::string operator+ (GCC bug 105329, a false positive).
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-restrict)
  endif()
endfunction()

# fedtune_library(name SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
# One static library per component; the repository root is the include root,
# so headers are included as "common/core/status.h".
function(fedtune_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  fedtune_strict(${name})
endfunction()

# fedtune_test(name SOURCES ... DEPS ... LABELS ...)
# A GoogleTest executable registered with ctest, one ctest entry per TEST().
function(fedtune_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})  # tests/testing/ helpers
  # Reference implementations (Debian's python3 with torch / sklearn) are run
  # by tests through tests/testing/python_reference.h.
  target_compile_definitions(${name} PRIVATE
    FEDTUNE_PYTHON3="${FEDTUNE_PYTHON3}" FEDTUNE_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  fedtune_strict(${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
    DISCOVERY_TIMEOUT 60)
endfunction()
