// Privacy accounting for client-level DP-FedAvg: Rényi differential privacy
// (RDP, Mironov 2017) of the sampled Gaussian mechanism (Mironov, Talwar and
// Zhang 2019), composed over rounds and converted to (epsilon, delta).
// Pure functions; torch-free, no network.
//
// A round releases the sum of the sites' clipped updates plus Gaussian noise
// of standard deviation noise_multiplier x clip norm. With sampling rate q
// (the chance that a given site takes part in a round; 1 when every site is
// asked every round) one round is (alpha, Rdp(q, z, alpha))-RDP for every
// order alpha > 1; T rounds compose to T x Rdp. Neighbouring federations
// differ by one whole site's data (client-level, add or remove).
#pragma once

#include <span>
#include <vector>

namespace fedtune::fl {

// The orders the accountant evaluates: 1.1 to 10.9 in steps of 0.1, 11 to 64,
// 128 and 256. Dense where the optimum falls for the usual settings.
const std::vector<double>& RdpOrders();

// RDP at `order` (> 1) of one step of the Gaussian mechanism with noise
// multiplier `z` (> 0) applied to a Poisson sample of rate `q` in [0, 1].
// Integer orders use the binomial expansion; fractional orders the two
// convergent series of Mironov et al. (2019, section 3.3). +infinity when
// z is 0 or a series does not converge (never understated).
double SampledGaussianRdp(double q, double z, double order);

// The (epsilon, delta) guarantee of an RDP curve, minimised over orders.
struct PrivacyGuarantee {
  double epsilon = 0;
  double order = 0;  // the order that gave the minimum
};

// The conversion of Balle et al. (2020, Theorem 21; also Canonne, Kamath and
// Steinke 2020): epsilon = rdp + log((alpha - 1) / alpha)
// - (log delta + log alpha) / (alpha - 1). Tighter than the classical one.
PrivacyGuarantee EpsilonFromRdp(std::span<const double> orders, std::span<const double> rdp, double delta);
// The classical conversion (Mironov 2017, Proposition 3):
// epsilon = rdp + log(1 / delta) / (alpha - 1). Published tables up to 2020
// (TensorFlow Privacy's tutorials) use it.
PrivacyGuarantee EpsilonFromRdpClassical(std::span<const double> orders, std::span<const double> rdp,
                                         double delta);

// epsilon after `steps` rounds at (q, z), with the tighter conversion. 0 for
// 0 steps; +infinity for z = 0.
double DpEpsilon(double q, double z, int steps, double delta);

// The largest number of rounds whose epsilon stays within `max_epsilon`
// (0 when not even one round does; capped at `limit`).
int DpMaxSteps(double q, double z, double delta, double max_epsilon, int limit);

// The smallest noise multiplier (to 3 significant digits, rounded up) for
// which `steps` rounds stay within `max_epsilon`; +infinity above 1e4.
double DpNoiseFor(double q, int steps, double delta, double max_epsilon);

}  // namespace fedtune::fl
