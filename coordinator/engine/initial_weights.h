// Version 0 of a job: the global state of a freshly built model, seeded by
// the job so it is reproducible. The coordinator and the simulator both
// start their jobs from it, so a simulated job starts where a real one does.
#pragma once

#include "absl/status/statusor.h"
#include "common/core/tensor_map.h"
#include "coordinator/engine/job_spec.h"

namespace fedtune::coordinator {

// LoRA A random, B zero, head random, and zero differences from the base
// weights for the backbone tensors a method trains (each site adds them to
// the base file the job names). Built on the CPU with one thread.
absl::StatusOr<TensorMap> InitialWeights(const JobSpec& job);

}  // namespace fedtune::coordinator
