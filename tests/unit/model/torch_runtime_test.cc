#include "common/model/torch_runtime.h"

#include <gtest/gtest.h>

#include "common/model/pch.h"

namespace fedtune::model {
namespace {

TEST(TorchRuntime, UsesEveryUsableCoreByDefault) {
  TorchRuntime rt = ConfigureTorchRuntime();
  EXPECT_EQ(rt.threads, UsableCpuCores());
  EXPECT_EQ(at::get_num_threads(), UsableCpuCores());
  EXPECT_FALSE(rt.torch_version.empty());
  EXPECT_GE(rt.cuda_devices, 0);
}

TEST(TorchRuntime, HonoursAnExplicitThreadCount) {
  EXPECT_EQ(ConfigureTorchRuntime(1).threads, 1);
  EXPECT_EQ(at::get_num_threads(), 1);
  ConfigureTorchRuntime();
}

}  // namespace
}  // namespace fedtune::model
