#include "common/fl/linalg.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace fedtune::fl {

Matrix Transpose(const Matrix& a) {
  Matrix t(a.cols, a.rows);
  for (int64_t r = 0; r < a.rows; ++r) {
    for (int64_t c = 0; c < a.cols; ++c) t(c, r) = a(r, c);
  }
  return t;
}

Matrix Multiply(const Matrix& a, const Matrix& b) {
  Matrix out(a.rows, b.cols);
  for (int64_t i = 0; i < a.rows; ++i) {
    for (int64_t k = 0; k < a.cols; ++k) {
      const double x = a(i, k);
      if (x == 0) continue;
      const double* brow = &b.v[static_cast<size_t>(k * b.cols)];
      double* orow = &out.v[static_cast<size_t>(i * out.cols)];
      for (int64_t j = 0; j < b.cols; ++j) orow[j] += x * brow[j];
    }
  }
  return out;
}

double FrobeniusSquared(const Matrix& a) {
  double s = 0;
  for (double x : a.v) s += x * x;
  return s;
}

void ThinQr(const Matrix& a, Matrix* q, Matrix* r) {
  const int64_t m = a.rows, n = a.cols, p = std::min(m, n);
  Matrix work = a;
  std::vector<std::vector<double>> reflectors;  // Householder vectors, one per column
  for (int64_t k = 0; k < p; ++k) {
    std::vector<double> x(static_cast<size_t>(m - k));
    for (int64_t i = k; i < m; ++i) x[static_cast<size_t>(i - k)] = work(i, k);
    double norm = 0;
    for (double xi : x) norm += xi * xi;
    norm = std::sqrt(norm);
    std::vector<double> vk = x;
    if (norm > 0) {
      vk[0] += x[0] >= 0 ? norm : -norm;  // the sign that avoids cancellation
      double vn = 0;
      for (double vi : vk) vn += vi * vi;
      vn = std::sqrt(vn);
      for (double& vi : vk) vi /= vn;
      // work[k:, k:] -= 2 v (v^T work[k:, k:])
      for (int64_t c = k; c < n; ++c) {
        double dot = 0;
        for (int64_t i = k; i < m; ++i) dot += vk[static_cast<size_t>(i - k)] * work(i, c);
        for (int64_t i = k; i < m; ++i) work(i, c) -= 2 * vk[static_cast<size_t>(i - k)] * dot;
      }
    } else {
      std::fill(vk.begin(), vk.end(), 0.0);  // nothing to reflect
    }
    reflectors.push_back(std::move(vk));
  }
  *r = Matrix(p, n);
  for (int64_t i = 0; i < p; ++i) {
    for (int64_t c = i; c < n; ++c) (*r)(i, c) = work(i, c);
  }
  // Q = H_0 H_1 ... H_{p-1} applied to the first p columns of the identity.
  *q = Matrix(m, p);
  for (int64_t i = 0; i < p; ++i) (*q)(i, i) = 1;
  for (int64_t k = p - 1; k >= 0; --k) {
    const std::vector<double>& vk = reflectors[static_cast<size_t>(k)];
    for (int64_t c = 0; c < p; ++c) {
      double dot = 0;
      for (int64_t i = k; i < m; ++i) dot += vk[static_cast<size_t>(i - k)] * (*q)(i, c);
      for (int64_t i = k; i < m; ++i) (*q)(i, c) -= 2 * vk[static_cast<size_t>(i - k)] * dot;
    }
  }
}

namespace {

// Tall case (m >= n): rotates pairs of columns of `w` (a copy of a) until
// they are mutually orthogonal, accumulating the rotations in `v`.
void JacobiTall(const Matrix& a, Matrix* u, std::vector<double>* s, Matrix* v) {
  const int64_t m = a.rows, n = a.cols;
  // Column-major copies make the column sweeps contiguous.
  std::vector<std::vector<double>> w(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(m)));
  std::vector<std::vector<double>> vv(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(n), 0.0));
  for (int64_t c = 0; c < n; ++c) {
    for (int64_t r = 0; r < m; ++r) w[static_cast<size_t>(c)][static_cast<size_t>(r)] = a(r, c);
    vv[static_cast<size_t>(c)][static_cast<size_t>(c)] = 1;
  }
  constexpr double kEps = 1e-15;
  for (int sweep = 0; sweep < 80; ++sweep) {
    bool rotated = false;
    for (int64_t i = 0; i < n - 1; ++i) {
      for (int64_t j = i + 1; j < n; ++j) {
        auto& wi = w[static_cast<size_t>(i)];
        auto& wj = w[static_cast<size_t>(j)];
        double alpha = 0, beta = 0, gamma = 0;
        for (int64_t r = 0; r < m; ++r) {
          alpha += wi[static_cast<size_t>(r)] * wi[static_cast<size_t>(r)];
          beta += wj[static_cast<size_t>(r)] * wj[static_cast<size_t>(r)];
          gamma += wi[static_cast<size_t>(r)] * wj[static_cast<size_t>(r)];
        }
        if (gamma == 0 || std::abs(gamma) <= kEps * std::sqrt(alpha * beta)) continue;
        rotated = true;
        const double zeta = (beta - alpha) / (2 * gamma);
        const double t = (zeta >= 0 ? 1.0 : -1.0) / (std::abs(zeta) + std::sqrt(1 + zeta * zeta));
        const double c = 1 / std::sqrt(1 + t * t), sn = c * t;
        for (int64_t r = 0; r < m; ++r) {
          const double x = wi[static_cast<size_t>(r)], y = wj[static_cast<size_t>(r)];
          wi[static_cast<size_t>(r)] = c * x - sn * y;
          wj[static_cast<size_t>(r)] = sn * x + c * y;
        }
        auto& vi = vv[static_cast<size_t>(i)];
        auto& vj = vv[static_cast<size_t>(j)];
        for (int64_t r = 0; r < n; ++r) {
          const double x = vi[static_cast<size_t>(r)], y = vj[static_cast<size_t>(r)];
          vi[static_cast<size_t>(r)] = c * x - sn * y;
          vj[static_cast<size_t>(r)] = sn * x + c * y;
        }
      }
    }
    if (!rotated) break;
  }
  std::vector<double> norms(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) {
    double ss = 0;
    for (double x : w[static_cast<size_t>(c)]) ss += x * x;
    norms[static_cast<size_t>(c)] = std::sqrt(ss);
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return norms[static_cast<size_t>(x)] > norms[static_cast<size_t>(y)]; });
  *u = Matrix(m, n);
  *v = Matrix(n, n);
  s->assign(static_cast<size_t>(n), 0.0);
  for (int64_t k = 0; k < n; ++k) {
    const int64_t c = order[static_cast<size_t>(k)];
    const double sigma = norms[static_cast<size_t>(c)];
    (*s)[static_cast<size_t>(k)] = sigma;
    for (int64_t r = 0; r < m; ++r) {
      (*u)(r, k) = sigma > 0 ? w[static_cast<size_t>(c)][static_cast<size_t>(r)] / sigma : 0.0;
    }
    for (int64_t r = 0; r < n; ++r) (*v)(r, k) = vv[static_cast<size_t>(c)][static_cast<size_t>(r)];
  }
}

// Replaces the (zero) columns of `q` that belong to zero singular values by
// unit vectors orthogonal to every other column (Gram-Schmidt on the
// standard basis), so that q's columns are orthonormal (q.cols <= q.rows).
void CompleteOrthonormalColumns(Matrix* q) {
  std::vector<bool> good(static_cast<size_t>(q->cols));
  for (int64_t c = 0; c < q->cols; ++c) {
    double n = 0;
    for (int64_t r = 0; r < q->rows; ++r) n += (*q)(r, c) * (*q)(r, c);
    good[static_cast<size_t>(c)] = n > 0.25;
  }
  for (int64_t c = 0; c < q->cols; ++c) {
    if (good[static_cast<size_t>(c)]) continue;
    for (int64_t k = 0; k < q->rows; ++k) {
      std::vector<double> x(static_cast<size_t>(q->rows), 0.0);
      x[static_cast<size_t>(k)] = 1;
      for (int pass = 0; pass < 2; ++pass) {  // twice: Gram-Schmidt's lost orthogonality comes back
        for (int64_t o = 0; o < q->cols; ++o) {
          if (!good[static_cast<size_t>(o)]) continue;
          double dot = 0;
          for (int64_t r = 0; r < q->rows; ++r) dot += (*q)(r, o) * x[static_cast<size_t>(r)];
          for (int64_t r = 0; r < q->rows; ++r) x[static_cast<size_t>(r)] -= dot * (*q)(r, o);
        }
      }
      double n = 0;
      for (double xi : x) n += xi * xi;
      if (n < 0.1) continue;  // e_k lies (nearly) in the span already
      n = std::sqrt(n);
      for (int64_t r = 0; r < q->rows; ++r) (*q)(r, c) = x[static_cast<size_t>(r)] / n;
      good[static_cast<size_t>(c)] = true;
      break;
    }
  }
}

}  // namespace

void Svd(const Matrix& a, Matrix* u, std::vector<double>* s, Matrix* v) {
  if (a.rows >= a.cols) {
    JacobiTall(a, u, s, v);
  } else {
    JacobiTall(Transpose(a), v, s, u);  // a^T = v s u^T
  }
  CompleteOrthonormalColumns(u);
  CompleteOrthonormalColumns(v);
}

}  // namespace fedtune::fl
