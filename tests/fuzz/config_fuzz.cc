// Fuzzes the three TOML files fedtune reads: the first byte picks the parser
// (0: site.toml, site-agent/config/site_config.h; 1: coordinator.toml,
// coordinator/service/coordinator_config.h; 2: a job file,
// coordinator/engine/job_spec.h; by its value modulo 3) and the rest is the
// file's text. Every input must be accepted or refused with a status: no
// crash, no exception escaping, no undefined behaviour.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "coordinator/engine/job_spec.h"
#include "coordinator/service/coordinator_config.h"
#include "site-agent/config/site_config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fedtune;
  if (size == 0) return 0;
  const std::string_view toml(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      fuzz::Report("site.toml", site::ParseSiteConfig(toml, "/etc/fedtune/site.toml").status());
      break;
    case 1:
      fuzz::Report("coordinator.toml",
                   coordinator::ParseCoordinatorConfig(toml, "/etc/fedtune/coordinator.toml").status());
      break;
    default:
      fuzz::Report("job.toml", coordinator::ParseJobSpec(std::string(toml), "job.toml").status());
      break;
  }
  return 0;
}
