#include "common/core/status.h"

#include <gtest/gtest.h>

namespace fedtune {
namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return absl::InvalidArgumentError("odd");
  return x / 2;
}

absl::Status CheckEven(int x) { return Half(x).status(); }

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

absl::Status Both(int a, int b) {
  RETURN_IF_ERROR(CheckEven(a));
  RETURN_IF_ERROR(Half(b));  // a StatusOr works too
  return absl::OkStatus();
}

TEST(StatusMacros, AssignOrReturnPropagatesErrorsAndValues) {
  EXPECT_EQ(*Quarter(12), 3);
  EXPECT_EQ(Quarter(6).status().code(), absl::StatusCode::kInvalidArgument);  // 6 -> 3 is odd
  EXPECT_EQ(Quarter(7).status().message(), "odd");
}

TEST(StatusMacros, AssignOrReturnIntoExistingVariable) {
  auto f = [](int x) -> absl::StatusOr<int> {
    int v = -1;
    ASSIGN_OR_RETURN(v, Half(x));
    return v + 100;
  };
  EXPECT_EQ(*f(4), 102);
  EXPECT_FALSE(f(5).ok());
}

TEST(StatusMacros, ReturnIfErrorStopsAtFirstError) {
  EXPECT_TRUE(Both(2, 4).ok());
  EXPECT_FALSE(Both(3, 4).ok());
  EXPECT_FALSE(Both(2, 5).ok());
}

TEST(Annotate, PrependsContextAndKeepsCode) {
  absl::Status s = Annotate(absl::NotFoundError("no such file"), "loading site.toml");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "loading site.toml: no such file");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "ctx").ok());
}

}  // namespace
}  // namespace fedtune
