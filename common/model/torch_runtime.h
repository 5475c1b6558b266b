// Process-wide LibTorch settings. Torch-free header.
#pragma once

#include <string>

namespace fedtune::model {

struct TorchRuntime {
  int threads = 1;            // intra-op threads LibTorch will use on CPU
  int cuda_devices = 0;       // visible CUDA devices (0 on a CPU-only build)
  std::string torch_version;  // "1.13.1", "2.11.0"
};

// Usable CPU cores: the process's CPU affinity set (which honours taskset and
// container cpusets), falling back to std::thread::hardware_concurrency().
int UsableCpuCores();

// Sets LibTorch's intra-op thread count to `threads`, or to UsableCpuCores()
// when `threads` <= 0 (LibTorch otherwise starts with 1 thread on some
// systems), and reports what it configured. Call once at start-up, before
// any training.
TorchRuntime ConfigureTorchRuntime(int threads = 0);

}  // namespace fedtune::model
