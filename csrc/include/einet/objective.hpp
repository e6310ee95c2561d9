// The accuracy expectation E(x) of an exit plan (docs/design.md section 2, the objective).
//
// Block i is a conv part (time conv[i]) followed by an optional exit branch
// (time branch[i]). A plan x over the remaining blocks start..N-1 says which
// branches run. If the inference is forced to stop at tau ~ F, the answer held
// at tau is that of the latest finished branch (rule `latest`) or the most
// confident one so far (rule `best`). E(x) is the probability mass, from the
// elapsed time t0 on, that the held answer is right:
//
//   E(x) = h (F(T_k1) - F(t0)) + sum_q s_kq (F(T_k(q+1)) - F(T_kq)),  F(T_k(r+1)) := 1.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "distributions.hpp"

namespace einet {

/// A read-only view of contiguous values (std::span is C++20).
template <class T>
struct Span {
    const T* ptr = nullptr;
    std::size_t len = 0;
    std::size_t size() const { return len; }
    const T& operator[](std::size_t i) const { return ptr[i]; }
    const T* begin() const { return ptr; }
    const T* end() const { return ptr + len; }
};

/// `run ? a : b` without a branch: the plan's bits are random, and a mispredicted
/// branch costs more than computing both sides. Selects exact bit patterns.
inline double select(bool run, double a, double b) {
    std::uint64_t a_bits, b_bits;
    std::memcpy(&a_bits, &a, sizeof a);
    std::memcpy(&b_bits, &b, sizeof b);
    const std::uint64_t keep_a = std::uint64_t{0} - static_cast<std::uint64_t>(run);
    const std::uint64_t bits = (a_bits & keep_a) | (b_bits & ~keep_a);
    double out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
}

/// Which finished branch's answer is held when the inference is stopped.
enum class Rule { latest, best };

inline Rule parse_rule(std::string_view name) {
    if (name == "latest") return Rule::latest;
    if (name == "best") return Rule::best;
    throw std::invalid_argument("unknown rule '" + std::string(name) + "': expected 'latest' or 'best'");
}

/// The score held after a branch with score `score` finishes, when `held` was held before.
inline double held_after(Rule rule, double held, double score) {
    return rule == Rule::latest ? score : std::max(held, score);
}

/// One sample's planning problem: the ET-profile, its exit scores and the online state.
struct Instance {
    Span<double> conv;    // conv-part time of every block, seconds
    Span<double> branch;  // branch time of every block, seconds
    Span<double> scores;  // probability that each exit's answer is right
    std::size_t start = 0;  // next block to run; the plan covers start..N-1
    double elapsed = 0.0;   // seconds already spent (t0)
    double held = 0.0;      // score of the answer already held (0: none)
    Rule rule = Rule::latest;

    std::size_t num_blocks() const { return conv.size(); }
    std::size_t remaining() const { return conv.size() - start; }
};

namespace detail {
inline void fail(const std::string& message) { throw std::invalid_argument(message); }

inline std::string at(std::size_t i) { return "[" + std::to_string(i) + "]"; }
}  // namespace detail

/// Checks an ET-profile: equal lengths, at least one block, finite non-negative times.
inline void validate_profile(Span<double> conv, Span<double> branch) {
    if (conv.size() == 0) detail::fail("the ET-profile has no blocks");
    if (conv.size() != branch.size()) {
        detail::fail("conv and branch times differ in length: " + std::to_string(conv.size()) + " vs " +
                     std::to_string(branch.size()));
    }
    for (std::size_t i = 0; i < conv.size(); ++i) {
        if (!std::isfinite(conv[i]) || conv[i] < 0.0) {
            detail::fail("conv time" + detail::at(i) + " must be finite and >= 0, got " + std::to_string(conv[i]));
        }
        if (!std::isfinite(branch[i]) || branch[i] < 0.0) {
            detail::fail("branch time" + detail::at(i) + " must be finite and >= 0, got " +
                         std::to_string(branch[i]));
        }
    }
}

/// Checks one sample's scores against the number of blocks: each in [0, 1].
inline void validate_scores(Span<double> scores, std::size_t num_blocks) {
    if (scores.size() != num_blocks) {
        detail::fail("scores has length " + std::to_string(scores.size()) + " but the ET-profile has " +
                     std::to_string(num_blocks) + " blocks");
    }
    for (std::size_t i = 0; i < scores.size(); ++i) {
        // The negated test also rejects NaN.
        if (!(scores[i] >= 0.0 && scores[i] <= 1.0)) {
            detail::fail("score" + detail::at(i) + " must be in [0, 1], got " + std::to_string(scores[i]));
        }
    }
}

/// Checks the online state: start within the model (N means nothing left), t0 >= 0, h in [0, 1].
inline void validate_state(std::size_t start, double elapsed, double held, std::size_t num_blocks) {
    if (start > num_blocks) {
        detail::fail("start=" + std::to_string(start) + " is outside the model of " + std::to_string(num_blocks) +
                     " blocks");
    }
    if (!std::isfinite(elapsed) || elapsed < 0.0) {
        detail::fail("elapsed must be finite and >= 0, got " + std::to_string(elapsed));
    }
    if (!(held >= 0.0 && held <= 1.0)) detail::fail("held must be in [0, 1], got " + std::to_string(held));
}

inline void validate(const Instance& in) {
    validate_profile(in.conv, in.branch);
    validate_scores(in.scores, in.num_blocks());
    validate_state(in.start, in.elapsed, in.held, in.num_blocks());
}

/// Checks that a plan has one 0/1 entry per remaining block.
inline void validate_mask(Span<std::uint8_t> mask, std::size_t remaining) {
    if (mask.size() != remaining) {
        detail::fail("the plan has length " + std::to_string(mask.size()) + " but " + std::to_string(remaining) +
                     " blocks remain");
    }
    for (std::size_t i = 0; i < mask.size(); ++i) {
        if (mask[i] > 1) detail::fail("plan" + detail::at(i) + " must be 0 or 1, got " + std::to_string(mask[i]));
    }
}

namespace detail {

/// E(x) for the plan `mask` (one entry per remaining block), in one pass over the blocks;
/// unchecked (the public overload below validates first).
/// F is evaluated only where a branch finishes, so the cost is N additions and r CDFs;
/// for distributions with a cheap CDF the loop runs without branching on the plan, since
/// mispredicted branches on a random plan cost more than the extra CDFs.
template <class Dist>
double expected_accuracy(const Instance& in, const Dist& dist, const std::uint8_t* mask) {
    double t = in.elapsed;
    double before = dist.cdf(t);
    double held = in.held;
    double value = 0.0;
    for (std::size_t block = in.start, i = 0; block < in.num_blocks(); ++block, ++i) {
        t += in.conv[block];
        if constexpr (has_cheap_cdf<Dist>::value) {
            const bool run = mask[i] != 0;
            t += select(run, in.branch[block], 0.0);  // adding 0.0 is exact: same rounding as the branchy form
            const double now = select(run, dist.cdf(t), before);
            value += held * (now - before);           // adds exactly 0 when the branch does not run
            before = now;
            held = select(run, held_after(in.rule, held, in.scores[block]), held);
        } else if (mask[i]) {
            t += in.branch[block];
            const double now = dist.cdf(t);
            value += held * (now - before);
            before = now;
            held = held_after(in.rule, held, in.scores[block]);
        }
    }
    return value + held * (1.0 - before);
}

}  // namespace detail

/// The checked entry point: validates the instance and the plan, then evaluates.
inline double expected_accuracy(const Instance& in, const Distribution& dist, Span<std::uint8_t> mask) {
    validate(in);
    validate_mask(mask, in.remaining());
    return std::visit([&](const auto& d) { return detail::expected_accuracy(in, d, mask.ptr); }, dist);
}

/// E of `count` plans (row-major [count, N - start]) in one call: out[p] = E(plan p).
inline void expected_accuracy_batch(const Instance& in, const Distribution& dist, const std::uint8_t* masks,
                                    std::size_t count, double* out) {
    validate(in);
    const std::size_t n = in.remaining();
    // One vectorisable pass finds whether any entry is not 0/1; only then look for which.
    std::uint8_t any_bits = 0;
    for (std::size_t i = 0; i < count * n; ++i) any_bits |= masks[i];
    if (any_bits > 1) {
        for (std::size_t p = 0; p < count; ++p) validate_mask({masks + p * n, n}, n);
    }
    std::visit(
        [&](const auto& d) {
            for (std::size_t p = 0; p < count; ++p) out[p] = detail::expected_accuracy(in, d, masks + p * n);
        },
        dist);
}

namespace detail {

/// A plan that grows one branch at a time, scoring each possible addition without
/// re-walking the whole plan: the greedy search's inner loop.
///
/// For the plan's branches k_1 < ... < k_r it keeps, after each branch q, its finish
/// time, F there, the score held and E accumulated so far. Adding branch j between
/// k_p and k_(p+1) leaves everything up to k_p unchanged and delays every later
/// branch by branch[j], so scoring it costs r - p + 1 CDFs and no pass over blocks.
template <class Dist>
class IncrementalPlan {
public:
    IncrementalPlan(const Instance& in, const Dist& dist) : in_(in), dist_(dist) {
        const std::size_t n = in.remaining();
        conv_done_.resize(n);
        double t = in.elapsed;
        for (std::size_t i = 0; i < n; ++i) {
            t += in.conv[in.start + i];
            conv_done_[i] = t;
        }
        mask_.resize(n);
    }

    /// Resets to the plan `mask` (one entry per remaining block).
    void assign(const std::uint8_t* mask) {
        std::copy(mask, mask + mask_.size(), mask_.begin());
        rebuild();
    }

    const std::vector<std::uint8_t>& mask() const { return mask_; }
    std::size_t num_branches() const { return branches_.size(); }
    double value() const {
        const Step& last = steps_.back();
        return last.value + last.held * (1.0 - last.cdf);
    }

    /// E of the plan with branch j (not yet in it) added.
    double value_with(std::size_t j) const {
        const std::size_t p = static_cast<std::size_t>(std::upper_bound(branches_.begin(), branches_.end(), j) -
                                                       branches_.begin());
        const Step& before = steps_[p];
        const std::size_t block = in_.start + j;
        const double delay = in_.branch[block];
        double now = dist_.cdf(conv_done_[j] + before.branch_time + delay);
        double value = before.value + before.held * (now - before.cdf);
        double held = held_after(in_.rule, before.held, in_.scores[block]);
        // Once F reaches 1 no later term can add anything.
        for (std::size_t q = p + 1; q < steps_.size() && now < 1.0; ++q) {
            const double later = dist_.cdf(steps_[q].finish + delay);
            value += held * (later - now);
            now = later;
            held = held_after(in_.rule, held, in_.scores[in_.start + branches_[q - 1]]);
        }
        return value + held * (1.0 - now);
    }

    void add(std::size_t j) {
        mask_[j] = 1;
        rebuild();
    }

private:
    struct Step {            // the state right after a branch finishes (step 0: at t0)
        double finish;       // its finish time
        double cdf;          // F(finish)
        double held;         // the score held from then on
        double value;        // E accumulated up to finish
        double branch_time;  // total branch time spent so far
    };

    void rebuild() {
        branches_.clear();
        steps_.clear();
        Step step{in_.elapsed, dist_.cdf(in_.elapsed), in_.held, 0.0, 0.0};
        steps_.push_back(step);
        for (std::size_t i = 0; i < mask_.size(); ++i) {
            if (!mask_[i]) continue;
            const std::size_t block = in_.start + i;
            step.branch_time += in_.branch[block];
            step.finish = conv_done_[i] + step.branch_time;
            const double now = dist_.cdf(step.finish);
            step.value += step.held * (now - step.cdf);
            step.cdf = now;
            step.held = held_after(in_.rule, step.held, in_.scores[block]);
            branches_.push_back(i);
            steps_.push_back(step);
        }
    }

    const Instance& in_;
    const Dist& dist_;
    std::vector<double> conv_done_;  // t0 + conv time of blocks start..start+i
    std::vector<std::uint8_t> mask_;
    std::vector<std::size_t> branches_;
    std::vector<Step> steps_;
};

}  // namespace detail

}  // namespace einet
