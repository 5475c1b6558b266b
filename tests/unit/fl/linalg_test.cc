#include "common/fl/linalg.h"

#include <gtest/gtest.h>

#include <random>

namespace fedtune::fl {
namespace {

Matrix RandomMatrix(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0, 1);
  Matrix m(rows, cols);
  for (double& x : m.v) x = n(rng);
  return m;
}

void ExpectOrthonormalColumns(const Matrix& q, int64_t upto) {
  const Matrix qtq = Multiply(Transpose(q), q);
  for (int64_t i = 0; i < upto; ++i) {
    for (int64_t j = 0; j < upto; ++j) EXPECT_NEAR(qtq(i, j), i == j ? 1.0 : 0.0, 1e-12) << i << "," << j;
  }
}

TEST(Linalg, ThinQrReconstructsTallAndWideMatrices) {
  for (auto [m, n] : {std::pair{9, 4}, std::pair{4, 9}, std::pair{6, 6}}) {
    const Matrix a = RandomMatrix(m, n, static_cast<uint64_t>(m * 31 + n));
    Matrix q, r;
    ThinQr(a, &q, &r);
    ASSERT_EQ(q.rows, m);
    ASSERT_EQ(q.cols, std::min(m, n));
    ASSERT_EQ(r.rows, std::min(m, n));
    ExpectOrthonormalColumns(q, q.cols);
    for (int64_t i = 0; i < r.rows; ++i) {
      for (int64_t j = 0; j < std::min<int64_t>(i, r.cols); ++j) EXPECT_EQ(r(i, j), 0.0);
    }
    const Matrix back = Multiply(q, r);
    for (size_t i = 0; i < a.v.size(); ++i) EXPECT_NEAR(back.v[i], a.v[i], 1e-12);
  }
}

TEST(Linalg, SvdReconstructsWithOrderedSingularValues) {
  for (auto [m, n] : {std::pair{12, 5}, std::pair{5, 12}, std::pair{7, 7}}) {
    Matrix a = RandomMatrix(m, n, static_cast<uint64_t>(m * 17 + n));
    Matrix u, v;
    std::vector<double> s;
    Svd(a, &u, &s, &v);
    ASSERT_EQ(s.size(), static_cast<size_t>(std::min(m, n)));
    for (size_t i = 1; i < s.size(); ++i) EXPECT_GE(s[i - 1], s[i]);
    ExpectOrthonormalColumns(u, u.cols);
    ExpectOrthonormalColumns(v, v.cols);
    Matrix us = u;
    for (int64_t r = 0; r < us.rows; ++r) {
      for (int64_t c = 0; c < us.cols; ++c) us(r, c) *= s[static_cast<size_t>(c)];
    }
    const Matrix back = Multiply(us, Transpose(v));
    for (size_t i = 0; i < a.v.size(); ++i) EXPECT_NEAR(back.v[i], a.v[i], 1e-11);
  }
}

TEST(Linalg, SvdOfARankDeficientMatrixKeepsOrthonormalVectors) {
  // rank 2 in a 6 x 4 matrix and in its 4 x 6 transpose: two zero singular
  // values, and u and v are still orthonormal (a re-factorised LoRA pair
  // must not get dead directions).
  const Matrix tall = Multiply(RandomMatrix(6, 2, 1), RandomMatrix(2, 4, 2));
  for (const Matrix& a : {tall, Transpose(tall)}) {
    Matrix u, v;
    std::vector<double> s;
    Svd(a, &u, &s, &v);
    EXPECT_GT(s[1], 1e-6);
    EXPECT_LT(s[2], 1e-12);
    EXPECT_LT(s[3], 1e-12);
    ExpectOrthonormalColumns(u, 4);
    ExpectOrthonormalColumns(v, 4);
    Matrix us = u;
    for (int64_t r = 0; r < us.rows; ++r) {
      for (int64_t c = 0; c < us.cols; ++c) us(r, c) *= s[static_cast<size_t>(c)];
    }
    const Matrix back = Multiply(us, Transpose(v));
    for (size_t i = 0; i < a.v.size(); ++i) EXPECT_NEAR(back.v[i], a.v[i], 1e-11);
  }
}

}  // namespace
}  // namespace fedtune::fl
