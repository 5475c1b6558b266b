// Small dense linear algebra in double precision for the aggregation
// strategies (LoRA re-factorisation): thin QR and the singular value
// decomposition of matrices of a few hundred rows. Torch-free, no BLAS.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fedtune::fl {

// Row-major rows x cols.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<double> v;

  Matrix() = default;
  Matrix(int64_t r, int64_t c) : rows(r), cols(c), v(static_cast<size_t>(r * c), 0.0) {}
  double& operator()(int64_t r, int64_t c) { return v[static_cast<size_t>(r * cols + c)]; }
  double operator()(int64_t r, int64_t c) const { return v[static_cast<size_t>(r * cols + c)]; }
};

Matrix Transpose(const Matrix& a);
// a x b (a.cols == b.rows).
Matrix Multiply(const Matrix& a, const Matrix& b);
// Squared Frobenius norm.
double FrobeniusSquared(const Matrix& a);

// Householder QR: a (m x n) = q r with q (m x p) orthonormal columns and
// r (p x n) upper triangular, p = min(m, n).
void ThinQr(const Matrix& a, Matrix* q, Matrix* r);

// One-sided Jacobi SVD (Hestenes): a (m x n) = u diag(s) v^T with
// p = min(m, n) singular values in descending order, u (m x p) and v (n x p)
// with orthonormal columns, also where a singular value is zero (there the
// columns complete the basis). Accurate to a few ulps of the largest
// singular value.
void Svd(const Matrix& a, Matrix* u, std::vector<double>* s, Matrix* v);

}  // namespace fedtune::fl
