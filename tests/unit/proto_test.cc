// The wire contract compiles into messages, services and gMock stubs, and
// messages survive serialization.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fedtune/v1/admin.grpc.pb.h"
#include "fedtune/v1/federation.grpc.pb.h"
#include "fedtune/v1/federation_mock.grpc.pb.h"
#include "fedtune/v1/inference.grpc.pb.h"

namespace fedtune {
namespace {

TEST(Proto, TaskRoundTripsThroughTheWireFormat) {
  v1::Task task;
  task.set_task_id("t-1");
  task.set_job_id("job-7");
  task.set_round(3);
  auto* train = task.mutable_train();
  train->mutable_config()->add_findings("Cardiomegaly");
  train->mutable_config()->set_lora_rank(16);
  train->mutable_weights()->set_sha256(std::string(64, 'a'));
  const std::string bytes = task.SerializeAsString();

  v1::Task back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  EXPECT_EQ(back.kind_case(), v1::Task::kTrain);
  EXPECT_EQ(back.round(), 3);
  EXPECT_EQ(back.train().config().findings(0), "Cardiomegaly");
  EXPECT_EQ(back.train().config().lora_rank(), 16);
  EXPECT_FALSE(back.ParseFromString("\xff\xff\xff"));
}

// Client code written against StubInterface can be driven by the mock.
TEST(Proto, MockStubStandsInForTheCoordinator) {
  v1::MockFederationStub stub;
  v1::JoinResponse canned;
  canned.set_site_id("hospital-a");
  EXPECT_CALL(stub, Join(testing::_, testing::_, testing::_))
      .WillOnce(testing::DoAll(testing::SetArgPointee<2>(canned), testing::Return(grpc::Status::OK)));
  v1::Federation::StubInterface* iface = &stub;
  grpc::ClientContext ctx;
  v1::JoinResponse resp;
  ASSERT_TRUE(iface->Join(&ctx, v1::JoinRequest(), &resp).ok());
  EXPECT_EQ(resp.site_id(), "hospital-a");
}

}  // namespace
}  // namespace fedtune
