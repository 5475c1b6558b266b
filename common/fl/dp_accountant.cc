#include "common/fl/dp_accountant.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace fedtune::fl {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// log(exp(a) + exp(b)) without overflow.
double LogAdd(double a, double b) {
  if (a == -kInf) return b;
  if (b == -kInf) return a;
  const double hi = std::max(a, b);
  return hi + std::log1p(std::exp(std::min(a, b) - hi));
}

// A sum of signed terms kept as sign x exp(log_abs): the fractional-order
// series alternate in sign and their terms span hundreds of orders of
// magnitude.
struct SignedLogSum {
  double log_abs = -kInf;
  int sign = 1;

  void Add(double log_term, int term_sign) {
    if (log_term == -kInf) return;
    if (log_abs == -kInf) {
      log_abs = log_term;
      sign = term_sign;
      return;
    }
    if (term_sign == sign) {
      log_abs = LogAdd(log_abs, log_term);
      return;
    }
    // Opposite signs: the larger magnitude wins the sign.
    const double hi = std::max(log_abs, log_term);
    const double lo = std::min(log_abs, log_term);
    if (hi == lo) {
      log_abs = -kInf;
      sign = 1;
      return;
    }
    if (log_term > log_abs) sign = term_sign;
    log_abs = hi + std::log1p(-std::exp(lo - hi));
  }
};

// log(erfc(x)), accurate in the far right tail where erfc underflows.
double LogErfc(double x) {
  const double e = std::erfc(x);
  if (e > 1e-300) return std::log(e);
  // Asymptotic expansion: erfc(x) = exp(-x^2) / (x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4) - ...).
  const double x2 = x * x;
  return -x2 - std::log(x) - 0.5 * std::log(M_PI) + std::log1p(-1 / (2 * x2) + 3 / (4 * x2 * x2));
}

// log A_alpha for an integer order: the expectation of (mu / mu0)^alpha over
// mu0 = N(0, z^2), mu = (1 - q) mu0 + q N(1, z^2), expanded binomially.
double LogAInteger(double q, double z, int alpha) {
  double log_a = -kInf;
  const double lq = std::log(q), l1q = std::log1p(-q);
  for (int k = 0; k <= alpha; ++k) {
    const double log_binom = std::lgamma(alpha + 1.0) - std::lgamma(k + 1.0) - std::lgamma(alpha - k + 1.0);
    const double term = log_binom + k * lq + (alpha - k) * l1q + (static_cast<double>(k) * k - k) / (2 * z * z);
    log_a = LogAdd(log_a, term);
  }
  return log_a;
}

// log A_alpha for a fractional order: the integral split at z0, where the two
// densities cross, each side expanded as a convergent binomial series in the
// generalised coefficients C(alpha, i) (Mironov, Talwar, Zhang 2019, 3.3).
// NaN when the series have not converged after many terms.
double LogAFractional(double q, double z, double alpha) {
  SignedLogSum a0, a1;
  const double z0 = z * z * std::log(1 / q - 1) + 0.5;
  const double lq = std::log(q), l1q = std::log1p(-q);
  const double s2 = std::sqrt(2.0) * z;
  // C(alpha, i) by its recurrence, as log |C| and a sign.
  double log_coef = 0;
  int coef_sign = 1;
  for (int i = 0; i < 100000; ++i) {
    const double j = alpha - i;
    const double t0 = log_coef + i * lq + j * l1q + (static_cast<double>(i) * i - i) / (2 * z * z) +
                      std::log(0.5) + LogErfc((i - z0) / s2);
    const double t1 = log_coef + j * lq + i * l1q + (j * j - j) / (2 * z * z) + std::log(0.5) + LogErfc((z0 - j) / s2);
    a0.Add(t0, coef_sign);
    a1.Add(t1, coef_sign);
    if (i > alpha && std::max(t0, t1) < std::max(a0.log_abs, a1.log_abs) - 30) {
      if (a0.sign < 0 || a1.sign < 0) return std::nan("");
      return LogAdd(a0.log_abs, a1.log_abs);
    }
    // C(alpha, i + 1) = C(alpha, i) (alpha - i) / (i + 1).
    const double ratio = (alpha - i) / (i + 1.0);
    if (ratio == 0) {
      log_coef = -kInf;
    } else {
      log_coef += std::log(std::fabs(ratio));
      if (ratio < 0) coef_sign = -coef_sign;
    }
  }
  return std::nan("");
}

PrivacyGuarantee Minimise(std::span<const double> orders, std::span<const double> rdp, double delta,
                          bool classical) {
  PrivacyGuarantee best{kInf, 0};
  const size_t n = std::min(orders.size(), rdp.size());
  for (size_t i = 0; i < n; ++i) {
    const double a = orders[i];
    if (!(a > 1) || !std::isfinite(rdp[i])) continue;
    double eps = classical ? rdp[i] + std::log(1 / delta) / (a - 1)
                           : rdp[i] + std::log((a - 1) / a) - (std::log(delta) + std::log(a)) / (a - 1);
    eps = std::max(eps, 0.0);
    if (eps < best.epsilon) best = {eps, a};
  }
  return best;
}

}  // namespace

const std::vector<double>& RdpOrders() {
  static const std::vector<double> kOrders = [] {
    std::vector<double> o;
    for (int x = 11; x < 110; ++x) o.push_back(x / 10.0);
    for (int x = 11; x <= 64; ++x) o.push_back(x);
    o.push_back(128);
    o.push_back(256);
    return o;
  }();
  return kOrders;
}

double SampledGaussianRdp(double q, double z, double order) {
  if (!(order > 1) || !(q >= 0 && q <= 1) || std::isnan(z)) return kInf;
  if (q == 0) return 0;
  if (!(z > 0)) return kInf;
  if (q == 1) return order / (2 * z * z);
  const double log_a = std::floor(order) == order && order < 1e6 ? LogAInteger(q, z, static_cast<int>(order))
                                                                  : LogAFractional(q, z, order);
  if (std::isnan(log_a)) return kInf;
  return log_a / (order - 1);
}

PrivacyGuarantee EpsilonFromRdp(std::span<const double> orders, std::span<const double> rdp, double delta) {
  return Minimise(orders, rdp, delta, /*classical=*/false);
}

PrivacyGuarantee EpsilonFromRdpClassical(std::span<const double> orders, std::span<const double> rdp,
                                         double delta) {
  return Minimise(orders, rdp, delta, /*classical=*/true);
}

double DpEpsilon(double q, double z, int steps, double delta) {
  if (steps <= 0 || q == 0) return 0;
  const auto& orders = RdpOrders();
  std::vector<double> rdp(orders.size());
  for (size_t i = 0; i < orders.size(); ++i) rdp[i] = steps * SampledGaussianRdp(q, z, orders[i]);
  return EpsilonFromRdp(orders, rdp, delta).epsilon;
}

int DpMaxSteps(double q, double z, double delta, double max_epsilon, int limit) {
  // epsilon grows with the steps: bisect.
  if (DpEpsilon(q, z, 1, delta) > max_epsilon) return 0;
  int lo = 1, hi = limit;
  if (DpEpsilon(q, z, hi, delta) <= max_epsilon) return hi;
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    (DpEpsilon(q, z, mid, delta) <= max_epsilon ? lo : hi) = mid;
  }
  return lo;
}

double DpNoiseFor(double q, int steps, double delta, double max_epsilon) {
  // epsilon falls as z grows: bisect on log z, then round up to 3 digits.
  double lo = 1e-3, hi = 1e4;
  if (DpEpsilon(q, hi, steps, delta) > max_epsilon) return kInf;
  for (int i = 0; i < 100; ++i) {
    const double mid = std::sqrt(lo * hi);
    (DpEpsilon(q, mid, steps, delta) <= max_epsilon ? hi : lo) = mid;
  }
  const double scale = std::pow(10.0, std::floor(std::log10(hi)) - 2);
  return std::ceil(hi / scale) * scale;
}

}  // namespace fedtune::fl
