// Distributions of the forced-exit time tau, each a small value type with cdf(t).
//
// Parameters are validated in the constructors (std::invalid_argument), so a
// distribution that exists is always usable: the hot loops never check again.
//
// One policy for every cdf: NaN in, NaN out (the searches never produce a NaN
// time, so this only concerns direct callers); F(-inf) = 0 and F(inf) = 1.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

namespace einet {

namespace detail {
inline void require_finite(double value, const char* name) {
    if (!std::isfinite(value)) {
        throw std::invalid_argument(std::string(name) + " must be finite, got " + std::to_string(value));
    }
}

// Upper tail of the standard normal, Q(z) = P(Z > z) = erfc(z / sqrt 2) / 2: full relative
// precision even where it is tiny (Phi(z) = Q(-z) likewise for the lower tail), which
// 1 - Phi(z) loses to cancellation as soon as Phi(z) rounds to 1.
inline double standard_normal_upper_tail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }
}  // namespace detail

/// F(t) = (t - low) / (high - low), clamped to [0, 1].
struct Uniform {
    static constexpr bool kCheapCdf = true;  // a few flops: worth evaluating without branching
    double low, high;
    Uniform(double low_, double high_) : low(low_), high(high_) {
        detail::require_finite(low, "Uniform low");
        detail::require_finite(high, "Uniform high");
        if (!(low < high)) {
            throw std::invalid_argument("Uniform needs low < high, got low=" + std::to_string(low) +
                                        " high=" + std::to_string(high));
        }
        // A width that overflows would make F 0 for every finite t and NaN at t = inf.
        if (!std::isfinite(high - low)) {
            throw std::invalid_argument("Uniform needs a finite width high - low, got low=" + std::to_string(low) +
                                        " high=" + std::to_string(high));
        }
    }
    // Operand order matters: std::max(x, 0.0) and std::min(x, 1.0) return x when x is NaN.
    double cdf(double t) const { return std::min(std::max((t - low) / (high - low), 0.0), 1.0); }
};

/// Normal(mean, std) truncated to t >= 0 and renormalised:
///   F(t) = P(0 < X <= t) / P(X >= 0),  X ~ Normal(mean, std).
/// The difference is taken between whichever tails are small, Phi(z) - Phi(z0) for
/// t <= mean and Q(z0) - Q(z) above, with z0 = -mean/std and z = (t - mean)/std, so
/// F keeps its relative precision also when nearly all mass lies below 0 (mean << 0,
/// where 1 - Phi(z0) would round to 0) and far below the mean (F tiny). The result is
/// exact for a mean within a few ulps, i.e. ~z0^2 ulps of relative error at most; the
/// ratio (Q(z0) - Q(z)) / Q(z0) stays exact in form when both tails are tiny. Refused:
/// a mass at t >= 0 below DBL_MIN (z0 > ~37.5), where Q(z0) would lose precision as a
/// subnormal and then underflow to 0.
struct Normal {
    double mean, std;
    double mass_above_zero;  // Q(z0) = P(X >= 0), cached: the denominator of every evaluation
    double mass_below_zero;  // Phi(z0) = Q(-z0) = P(X < 0), from its own tail: exact when tiny
    Normal(double mean_, double std_) : mean(mean_), std(std_), mass_above_zero(0.0), mass_below_zero(0.0) {
        detail::require_finite(mean, "Normal mean");
        detail::require_finite(std, "Normal std");
        if (!(std > 0.0)) throw std::invalid_argument("Normal needs std > 0, got std=" + std::to_string(std));
        const double z0 = -mean / std;
        mass_above_zero = detail::standard_normal_upper_tail(z0);
        mass_below_zero = detail::standard_normal_upper_tail(-z0);
        if (!(mass_above_zero >= DBL_MIN)) {
            throw std::invalid_argument("Normal(mean=" + std::to_string(mean) + ", std=" + std::to_string(std) +
                                        ") has no mass at t >= 0 (below the smallest normal double)");
        }
    }
    double cdf(double t) const {
        if (std::isnan(t)) return t;
        if (t <= 0.0) return 0.0;
        const double z = (t - mean) / std;
        const double inside = z <= 0.0 ? detail::standard_normal_upper_tail(-z) - mass_below_zero
                                       : mass_above_zero - detail::standard_normal_upper_tail(z);
        return inside / mass_above_zero;
    }
};

/// F(t) = 1 - exp(-rate t) for t > 0.
struct Exponential {
    double rate;
    explicit Exponential(double rate_) : rate(rate_) {
        detail::require_finite(rate, "Exponential rate");
        if (!(rate > 0.0)) throw std::invalid_argument("Exponential needs rate > 0, got rate=" + std::to_string(rate));
    }
    double cdf(double t) const {
        if (t <= 0.0) return 0.0;  // NaN fails the test and stays NaN below
        return -std::expm1(-rate * t);
    }
};

/// F(t) = fraction of samples <= t: a measured trace of exit times.
struct Empirical {
    // Shared and immutable, so copying a distribution (into a thread, a variant) is O(1).
    std::shared_ptr<const std::vector<double>> sorted;
    explicit Empirical(std::vector<double> samples) {
        if (samples.empty()) throw std::invalid_argument("Empirical needs at least one sample, got none");
        for (double s : samples) detail::require_finite(s, "Empirical sample");
        std::sort(samples.begin(), samples.end());
        sorted = std::make_shared<const std::vector<double>>(std::move(samples));
    }
    double cdf(double t) const {
        if (std::isnan(t)) return t;  // upper_bound would count every sample: F = 1
        const auto& s = *sorted;
        const auto count = std::upper_bound(s.begin(), s.end(), t) - s.begin();
        return static_cast<double>(count) / static_cast<double>(s.size());
    }
};

/// A known deadline d: F(t) = 1 if t >= d else 0 (the predictable case).
struct Deterministic {
    static constexpr bool kCheapCdf = true;
    double deadline;
    explicit Deterministic(double deadline_) : deadline(deadline_) {
        detail::require_finite(deadline, "Deterministic deadline");
        if (deadline < 0.0) {
            throw std::invalid_argument("Deterministic needs deadline >= 0, got deadline=" + std::to_string(deadline));
        }
    }
    double cdf(double t) const { return std::isnan(t) ? t : static_cast<double>(t >= deadline); }
};

/// Whether Dist's CDF is so cheap that evaluating it at every block beats branching on the plan.
template <class Dist, class = void>
struct has_cheap_cdf : std::false_type {};
template <class Dist>
struct has_cheap_cdf<Dist, std::void_t<decltype(Dist::kCheapCdf)>> : std::bool_constant<Dist::kCheapCdf> {};

/// Any of the above; searches are templated on the concrete type and dispatched once per call.
using Distribution = std::variant<Uniform, Normal, Exponential, Empirical, Deterministic>;

inline double cdf(const Distribution& dist, double t) {
    return std::visit([t](const auto& d) { return d.cdf(t); }, dist);
}

}  // namespace einet
