#include "common/model/torch_runtime.h"

#include <sched.h>

#include <thread>

namespace fedtune::model {

int UsableCpuCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

TorchRuntime ConfigureTorchRuntime(int threads) {
  if (threads <= 0) threads = UsableCpuCores();
  at::set_num_threads(threads);
  TorchRuntime rt;
  rt.threads = at::get_num_threads();
  rt.cuda_devices = static_cast<int>(torch::cuda::device_count());
  rt.torch_version = TORCH_VERSION;
  return rt;
}

}  // namespace fedtune::model
