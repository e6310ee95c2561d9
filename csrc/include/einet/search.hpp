// Exit-plan searches (DESIGN.md section 3): exhaustive, greedy, hybrid(depth), random.
//
// Every search returns the plan, its E and how many plans it evaluated. Values
// within kTieTolerance of each other count as equal, so that rounding noise of
// ~1e-16 never decides between two plans; ties break toward fewer branches,
// then the lexicographically smaller mask. The pure-Python reference follows
// the same rules, so both return the same plans.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "objective.hpp"

namespace einet {

inline constexpr double kTieTolerance = 1e-12;
inline constexpr std::size_t kMaxExhaustiveBlocks = 25;

enum class Method { exhaustive, greedy, hybrid, random };

inline Method parse_method(std::string_view name) {
    if (name == "exhaustive") return Method::exhaustive;
    if (name == "greedy") return Method::greedy;
    if (name == "hybrid") return Method::hybrid;
    if (name == "random") return Method::random;
    throw std::invalid_argument("unknown method '" + std::string(name) +
                                "': expected 'exhaustive', 'greedy', 'hybrid' or 'random'");
}

struct SearchOptions {
    Method method = Method::hybrid;
    std::size_t depth = 4;         // hybrid: branches enumerated before greedy
    std::uint64_t budget = 1000;   // random: plans drawn
    std::uint64_t seed = 0;        // random: generator seed
};

inline void validate(const SearchOptions& options, std::size_t remaining) {
    if (options.method == Method::exhaustive && remaining > kMaxExhaustiveBlocks) {
        throw std::invalid_argument("exhaustive search over " + std::to_string(remaining) +
                                    " blocks refused: at most " + std::to_string(kMaxExhaustiveBlocks));
    }
    if (options.method == Method::hybrid && options.depth > kMaxExhaustiveBlocks) {
        throw std::invalid_argument("hybrid depth=" + std::to_string(options.depth) + " refused: at most " +
                                    std::to_string(kMaxExhaustiveBlocks));
    }
    if (options.method == Method::random && options.budget == 0) {
        throw std::invalid_argument("random search needs budget >= 1, got 0");
    }
}

struct Plan {
    std::vector<std::uint8_t> mask;  // one entry per remaining block
    double value = 0.0;              // its E
    std::uint64_t evaluations = 0;   // plans evaluated to find it
};

/// True when plan a (value, mask) is preferred to plan b.
inline bool preferred(double a_value, const std::uint8_t* a_mask, double b_value, const std::uint8_t* b_mask,
                      std::size_t n) {
    if (a_value > b_value + kTieTolerance) return true;
    if (b_value > a_value + kTieTolerance) return false;
    const auto a_count = std::count(a_mask, a_mask + n, std::uint8_t{1});
    const auto b_count = std::count(b_mask, b_mask + n, std::uint8_t{1});
    if (a_count != b_count) return a_count < b_count;
    return std::lexicographical_compare(a_mask, a_mask + n, b_mask, b_mask + n);
}

namespace detail {

/// Greedy from the current plan of `plan`, adding only branches at positions >= first.
/// Adds the branch that raises E the most until none raises it by more than the tolerance;
/// among equal raises the later branch wins (the lexicographically smaller mask).
template <class Dist>
std::uint64_t greedy_from(IncrementalPlan<Dist>& plan, std::size_t first) {
    const std::size_t n = plan.mask().size();
    std::uint64_t evaluations = 1;  // the starting plan
    double current = plan.value();
    for (;;) {
        std::size_t chosen = n;
        double chosen_value = current + kTieTolerance;
        for (std::size_t j = first; j < n; ++j) {
            if (plan.mask()[j]) continue;
            const double value = plan.value_with(j);
            ++evaluations;
            if (chosen == n ? value > chosen_value : value >= chosen_value - kTieTolerance) {
                chosen = j;
                chosen_value = value;
            }
        }
        if (chosen == n) return evaluations;
        plan.add(chosen);
        current = plan.value();
    }
}

inline std::uint64_t splitmix64(std::uint64_t& state) {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

template <class Dist>
void exhaustive_walk(const Instance& in, const Dist& dist, std::size_t i, double t, double before, double held,
                     double value, std::vector<std::uint8_t>& mask, Plan& best) {
    const std::size_t n = mask.size();
    if (i == n) {
        const double total = value + held * (1.0 - before);
        if (preferred(total, mask.data(), best.value, best.mask.data(), n)) {
            best.value = total;
            best.mask = mask;
        }
        return;
    }
    const std::size_t block = in.start + i;
    t += in.conv[block];
    mask[i] = 0;
    exhaustive_walk(in, dist, i + 1, t, before, held, value, mask, best);
    mask[i] = 1;
    t += in.branch[block];
    const double now = dist.cdf(t);
    exhaustive_walk(in, dist, i + 1, t, now, held_after(in.rule, held, in.scores[block]),
                    value + held * (now - before), mask, best);
    mask[i] = 0;
}

}  // namespace detail

/// Every plan of the remaining blocks, walked depth-first so that plans sharing a
/// prefix share its arithmetic: O(2^n) work in all, each value bit-identical to
/// expected_accuracy's.
template <class Dist>
Plan exhaustive(const Instance& in, const Dist& dist) {
    const std::size_t n = in.remaining();
    Plan best;
    best.mask.assign(n, 1);
    best.value = -std::numeric_limits<double>::infinity();
    std::vector<std::uint8_t> mask(n, 0);
    detail::exhaustive_walk(in, dist, 0, in.elapsed, dist.cdf(in.elapsed), in.held, 0.0, mask, best);
    best.evaluations = std::uint64_t{1} << n;
    return best;
}

template <class Dist>
Plan greedy(const Instance& in, const Dist& dist) {
    IncrementalPlan<Dist> plan(in, dist);
    const std::vector<std::uint8_t> empty(in.remaining(), 0);
    plan.assign(empty.data());
    Plan result;
    result.evaluations = detail::greedy_from(plan, 0);
    result.mask = plan.mask();
    result.value = plan.value();
    return result;
}

/// The paper's search: every setting of the next `depth` branches, each completed
/// greedily, and plain greedy among the candidates; the preferred one wins.
template <class Dist>
Plan hybrid(const Instance& in, const Dist& dist, std::size_t depth) {
    const std::size_t n = in.remaining();
    const std::size_t k = std::min(depth, n);
    IncrementalPlan<Dist> plan(in, dist);
    Plan best = greedy(in, dist);
    std::uint64_t evaluations = best.evaluations;
    std::vector<std::uint8_t> prefix(n, 0);
    for (std::uint64_t bits = 0; bits < (std::uint64_t{1} << k); ++bits) {
        for (std::size_t i = 0; i < k; ++i) prefix[i] = static_cast<std::uint8_t>((bits >> i) & 1U);
        plan.assign(prefix.data());
        evaluations += detail::greedy_from(plan, k);
        const double value = plan.value();
        if (preferred(value, plan.mask().data(), best.value, best.mask.data(), n)) {
            best.value = value;
            best.mask = plan.mask();
        }
    }
    best.evaluations = evaluations;
    return best;
}

/// The best of `budget` uniformly random plans (a baseline). Bit i of a plan is
/// bit (i mod 64) of the (i / 64)-th splitmix64 draw for that plan.
template <class Dist>
Plan random_search(const Instance& in, const Dist& dist, std::uint64_t budget, std::uint64_t seed) {
    const std::size_t n = in.remaining();
    Plan best;
    best.mask.assign(n, 1);
    best.value = -std::numeric_limits<double>::infinity();
    std::vector<std::uint8_t> mask(n);
    std::uint64_t state = seed;
    std::uint64_t word = 0;
    for (std::uint64_t draw = 0; draw < budget; ++draw) {
        for (std::size_t i = 0; i < n; ++i) {
            if (i % 64 == 0) word = detail::splitmix64(state);
            mask[i] = static_cast<std::uint8_t>((word >> (i % 64)) & 1U);
        }
        const double value = expected_accuracy(in, dist, mask.data());
        if (preferred(value, mask.data(), best.value, best.mask.data(), n)) {
            best.value = value;
            best.mask = mask;
        }
    }
    best.evaluations = budget;
    return best;
}

/// The search `options` names, unchecked: callers validate the instance and options first.
template <class Dist>
Plan search(const Instance& in, const Dist& dist, const SearchOptions& options) {
    switch (options.method) {
        case Method::exhaustive: return exhaustive(in, dist);
        case Method::greedy: return greedy(in, dist);
        case Method::hybrid: return hybrid(in, dist, options.depth);
        case Method::random: return random_search(in, dist, options.budget, options.seed);
    }
    throw std::invalid_argument("unknown search method");
}

/// The checked entry point: validates the instance and options, then searches.
inline Plan search(const Instance& in, const Distribution& dist, const SearchOptions& options) {
    validate(in);
    validate(options, in.remaining());
    return std::visit([&](const auto& d) { return search(in, d, options); }, dist);
}

/// Many samples' searches in one call, split over `threads` threads (0: all cores).
/// scores is row-major [count, N]; elapsed and held hold one entry per sample.
/// Writes masks (row-major [count, N - start]), values and evaluation counts.
struct BatchOutput {
    std::uint8_t* masks;
    double* values;
    std::uint64_t* evaluations;
};

inline void search_batch(Span<double> conv, Span<double> branch, const double* scores, std::size_t count,
                         std::size_t start, const double* elapsed, const double* held, Rule rule,
                         const Distribution& dist, const SearchOptions& options, BatchOutput out,
                         std::size_t threads = 0) {
    // Everything is checked before any thread starts, so no worker can throw.
    validate_profile(conv, branch);
    const std::size_t num_blocks = conv.size();
    for (std::size_t row = 0; row < count; ++row) {
        validate_scores({scores + row * num_blocks, num_blocks}, num_blocks);
        validate_state(start, elapsed[row], held[row], num_blocks);
    }
    const std::size_t n = num_blocks - start;
    validate(options, n);
    auto plan_range = [&](std::size_t first, std::size_t last) {
        for (std::size_t row = first; row < last; ++row) {
            Instance in{conv, branch, {scores + row * num_blocks, num_blocks}, start, elapsed[row], held[row], rule};
            const Plan plan = std::visit([&](const auto& d) { return search(in, d, options); }, dist);
            std::copy(plan.mask.begin(), plan.mask.end(), out.masks + row * n);
            out.values[row] = plan.value;
            out.evaluations[row] = plan.evaluations;
        }
    };
    if (threads == 0) threads = std::max(1U, std::thread::hardware_concurrency());
    threads = std::min(threads, std::max<std::size_t>(count, 1));
    if (threads == 1) {
        plan_range(0, count);
        return;
    }
    std::vector<std::thread> workers;
    workers.reserve(threads - 1);
    const std::size_t chunk = (count + threads - 1) / threads;
    for (std::size_t t = 1; t < threads; ++t) {
        workers.emplace_back(plan_range, std::min(count, t * chunk), std::min(count, (t + 1) * chunk));
    }
    plan_range(0, std::min(count, chunk));
    for (auto& worker : workers) worker.join();
}

}  // namespace einet
