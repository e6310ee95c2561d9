// Exit-plan searches (docs/design.md section 4, the search engine): exhaustive, greedy, hybrid(depth), random.
//
// Every search returns the plan, its E and how many plans it evaluated. Values
// within kTieTolerance of each other count as equal, so that rounding noise of
// ~1e-16 never decides between two plans; ties break toward fewer branches,
// then the lexicographically smaller mask. The pure-Python reference follows
// the same rules, so both return the same plans.
//
// The work of a search is bounded up front (validate refuses what would run for
// more than about a second: exhaustive over more than 25 blocks, hybrid deeper
// than 20, a random budget above 10^7, and any search whose worst-case count of
// block steps, weighted by the CDF's cost, exceeds 2^27), and a long search can be abandoned through a
// StopCheck that it asks about every kPollInterval evaluations.
// The public entry points (search, search_batch) validate everything; the
// unchecked per-method searches live in einet::detail.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "objective.hpp"

namespace einet {

inline constexpr double kTieTolerance = 1e-12;
inline constexpr std::size_t kMaxExhaustiveBlocks = 25;   // exhaustive: 2^n plans
inline constexpr std::size_t kMaxHybridDepth = 20;        // hybrid: 2^depth greedy completions...
inline constexpr unsigned kMaxHybridWorkLog2 = 25;        // ...and 2^min(depth, n) * n <= 2^25
inline constexpr std::uint64_t kMaxRandomBudget = 10'000'000;  // random: plans drawn
inline constexpr unsigned kMaxSearchWorkLog2 = 27;        // any search: at most 2^27 weighted block steps (< 1 s)
inline constexpr std::size_t kMaxThreads = 256;           // search_batch threads
inline constexpr std::uint64_t kPollInterval = 1 << 14;   // evaluations between two stop checks

/// Asked about every kPollInterval evaluations whether to abandon a search; when it returns
/// true, the search throws einet::Interrupted. search_batch asks it from all its threads at
/// once, so it must be thread-safe. An empty one is never asked. (The Python binding passes
/// one that notices Ctrl-C: the core itself knows nothing of Python.)
using StopCheck = std::function<bool()>;

/// Thrown by a search whose StopCheck asked it to stop.
struct Interrupted : std::runtime_error {
    Interrupted() : std::runtime_error("einet: the search was interrupted") {}
};

namespace detail {
/// 2^k as a 64-bit count; refuses k >= 64, where the shift would be undefined.
inline std::uint64_t pow2(std::size_t k) {
    if (k >= 64) throw std::invalid_argument("2^" + std::to_string(k) + " does not fit in 64 bits");
    return std::uint64_t{1} << k;
}

/// Counts a search's evaluations and asks the StopCheck once every kPollInterval of them.
class Poll {
public:
    explicit Poll(const StopCheck& stop) : stop_(stop ? &stop : nullptr) {}
    void count(std::uint64_t evaluations) {
        if (!stop_) return;
        since_ += evaluations;
        if (since_ < kPollInterval) return;
        since_ = 0;
        if ((*stop_)()) throw Interrupted();
    }

private:
    const StopCheck* stop_;  // null: never stop
    std::uint64_t since_ = 0;
};
}  // namespace detail

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

namespace detail {
/// Upper bound on the block steps (one CDF and a few flops each) of greedy_from with `free`
/// positions it may add branches at, among `n` remaining blocks (so at most n - free branches set
/// before it starts): at most free + 1 rounds; round i scores at most free - i candidates, each
/// walking the at most (n - free) + i + 1 branches after it, and then rebuilds the plan (n + 1 steps).
/// The sum of (free - i)(n - free + i + 1) over the rounds is below the first term.
inline double greedy_work(double free, double n) {
    return (free + 1.0) * (free + 1.0) * (free + 3.0 * (n - free) + 3.0) / 6.0 + (free + 1.0) * (n + 1.0);
}

/// Worst-case block steps of a search over `remaining` blocks (in double: no overflow).
/// Exhaustive search walks a tree of 2^(n+1) nodes (the plans share their prefixes).
inline double search_work(const SearchOptions& options, std::size_t remaining) {
    const double n = static_cast<double>(remaining);
    switch (options.method) {
        case Method::exhaustive: return std::ldexp(1.0, static_cast<int>(std::min<std::size_t>(remaining, 1000)) + 1);
        case Method::greedy: return greedy_work(n, n);
        case Method::hybrid: {
            const std::size_t k = std::min(options.depth, remaining);
            return greedy_work(n, n) + std::ldexp(greedy_work(n - static_cast<double>(k), n), static_cast<int>(k));
        }
        case Method::random: return static_cast<double>(options.budget) * std::max(n, 1.0);
    }
    return 0.0;
}

/// Relative cost of one block step with the distribution's CDF (measured: a few ns for
/// Uniform and Deterministic, about 2x that with expm1, 4x with erfc); Empirical's CDF is a
/// binary search over its samples, dearer the larger the trace (cache misses).
inline double cdf_cost(const Distribution& dist) {
    if (std::holds_alternative<Exponential>(dist)) return 2.0;
    if (std::holds_alternative<Normal>(dist)) return 4.0;
    if (const auto* empirical = std::get_if<Empirical>(&dist)) {
        return 2.0 + std::log2(static_cast<double>(empirical->sorted->size())) / 4.0;
    }
    return 1.0;
}

inline const char* method_name(Method method) {
    switch (method) {
        case Method::exhaustive: return "exhaustive";
        case Method::greedy: return "greedy";
        case Method::hybrid: return "hybrid";
        case Method::random: return "random";
    }
    return "?";
}
}  // namespace detail

/// Checks the options against the number of blocks to plan: refuses every search that
/// would run unboundedly long (see the caps above). `cdf_cost`: detail::cdf_cost of the
/// distribution searched with (the work cap counts block steps weighted by it).
inline void validate(const SearchOptions& options, std::size_t remaining, double cdf_cost = 1.0) {
    if (options.method == Method::exhaustive && remaining > kMaxExhaustiveBlocks) {
        throw std::invalid_argument("exhaustive search over " + std::to_string(remaining) +
                                    " blocks refused: at most " + std::to_string(kMaxExhaustiveBlocks));
    }
    if (options.method == Method::hybrid) {
        if (options.depth > kMaxHybridDepth) {
            throw std::invalid_argument("hybrid depth=" + std::to_string(options.depth) + " refused: at most " +
                                        std::to_string(kMaxHybridDepth));
        }
        const std::size_t k = std::min(options.depth, remaining);
        // k <= 20, so 2^k * remaining cannot overflow for any remaining below 2^43.
        if (remaining > (std::size_t{1} << 40) || detail::pow2(k) * remaining > detail::pow2(kMaxHybridWorkLog2)) {
            throw std::invalid_argument("hybrid depth=" + std::to_string(options.depth) + " over " +
                                        std::to_string(remaining) + " blocks refused: 2^" + std::to_string(k) +
                                        " x " + std::to_string(remaining) + " exceeds the work cap, at most 2^" +
                                        std::to_string(kMaxHybridWorkLog2) + "; use a smaller depth");
        }
    }
    if (options.method == Method::random && options.budget == 0) {
        throw std::invalid_argument("random search needs budget >= 1, got 0");
    }
    if (options.method == Method::random && options.budget > kMaxRandomBudget) {
        throw std::invalid_argument("random search budget=" + std::to_string(options.budget) +
                                    " refused: at most " + std::to_string(kMaxRandomBudget));
    }
    // The caps above bound the depth and the budget, not how the work grows with the blocks
    // (greedy is cubic in them): this one bounds the time of every search.
    const double work = detail::search_work(options, remaining) * cdf_cost;
    if (work > std::ldexp(1.0, kMaxSearchWorkLog2)) {
        std::string what = std::string(detail::method_name(options.method)) + " search over " +
                           std::to_string(remaining) + " blocks";
        if (options.method == Method::hybrid) what += " at depth=" + std::to_string(options.depth);
        if (options.method == Method::random) what += " with budget=" + std::to_string(options.budget);
        throw std::invalid_argument(what + " refused: up to 2^" +
                                    std::to_string(static_cast<int>(std::ceil(std::log2(work)))) +
                                    " (CDF-weighted) block steps exceed the work cap, at most 2^" +
                                    std::to_string(kMaxSearchWorkLog2) +
                                    "; plan fewer blocks, or use a smaller depth or budget");
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
std::uint64_t greedy_from(IncrementalPlan<Dist>& plan, std::size_t first, Poll& poll) {
    const std::size_t n = plan.mask().size();
    std::uint64_t evaluations = 1;  // the starting plan
    poll.count(1);
    double current = plan.value();
    for (;;) {
        std::size_t chosen = n;
        double chosen_value = current + kTieTolerance;
        const std::uint64_t before = evaluations;
        for (std::size_t j = first; j < n; ++j) {
            if (plan.mask()[j]) continue;
            const double value = plan.value_with(j);
            ++evaluations;
            if (chosen == n ? value > chosen_value : value >= chosen_value - kTieTolerance) {
                chosen = j;
                chosen_value = value;
            }
        }
        poll.count(evaluations - before);
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

inline constexpr std::size_t kExhaustivePollLevel = 14;  // 2^14 = kPollInterval plans below that level

template <class Dist>
void exhaustive_walk(const Instance& in, const Dist& dist, std::size_t i, double t, double before, double held,
                     double value, std::vector<std::uint8_t>& mask, Plan& best, Poll& poll) {
    const std::size_t n = mask.size();
    if (n - i == kExhaustivePollLevel) poll.count(std::uint64_t{1} << kExhaustivePollLevel);
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
    exhaustive_walk(in, dist, i + 1, t, before, held, value, mask, best, poll);
    mask[i] = 1;
    t += in.branch[block];
    const double now = dist.cdf(t);
    exhaustive_walk(in, dist, i + 1, t, now, held_after(in.rule, held, in.scores[block]),
                    value + held * (now - before), mask, best, poll);
    mask[i] = 0;
}

// The per-method searches below are unchecked: callers validate the instance and the
// options first (einet::search does), and they are kept out of the public namespace.

/// Every plan of the remaining blocks, walked depth-first so that plans sharing a
/// prefix share its arithmetic: O(2^n) work in all, each value bit-identical to
/// expected_accuracy's.
template <class Dist>
Plan exhaustive(const Instance& in, const Dist& dist, Poll& poll) {
    const std::size_t n = in.remaining();
    const std::uint64_t plans = pow2(n);  // refuses n >= 64 before any work
    Plan best;
    best.mask.assign(n, 1);
    best.value = -std::numeric_limits<double>::infinity();
    std::vector<std::uint8_t> mask(n, 0);
    exhaustive_walk(in, dist, 0, in.elapsed, dist.cdf(in.elapsed), in.held, 0.0, mask, best, poll);
    best.evaluations = plans;
    return best;
}

template <class Dist>
Plan greedy(const Instance& in, const Dist& dist, Poll& poll) {
    IncrementalPlan<Dist> plan(in, dist);
    const std::vector<std::uint8_t> empty(in.remaining(), 0);
    plan.assign(empty.data());
    Plan result;
    result.evaluations = greedy_from(plan, 0, poll);
    result.mask = plan.mask();
    result.value = plan.value();
    return result;
}

/// The paper's search: every setting of the next `depth` branches, each completed
/// greedily, and plain greedy among the candidates; the preferred one wins.
template <class Dist>
Plan hybrid(const Instance& in, const Dist& dist, std::size_t depth, Poll& poll) {
    const std::size_t n = in.remaining();
    const std::size_t k = std::min(depth, n);
    const std::uint64_t prefixes = pow2(k);  // refuses k >= 64 before any work
    IncrementalPlan<Dist> plan(in, dist);
    Plan best = greedy(in, dist, poll);
    std::uint64_t evaluations = best.evaluations;
    std::vector<std::uint8_t> prefix(n, 0);
    for (std::uint64_t bits = 0; bits < prefixes; ++bits) {
        for (std::size_t i = 0; i < k; ++i) prefix[i] = static_cast<std::uint8_t>((bits >> i) & 1U);
        plan.assign(prefix.data());
        evaluations += greedy_from(plan, k, poll);
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
Plan random_search(const Instance& in, const Dist& dist, std::uint64_t budget, std::uint64_t seed, Poll& poll) {
    const std::size_t n = in.remaining();
    Plan best;
    best.mask.assign(n, 1);
    best.value = -std::numeric_limits<double>::infinity();
    std::vector<std::uint8_t> mask(n);
    std::uint64_t state = seed;
    std::uint64_t word = 0;
    for (std::uint64_t draw = 0; draw < budget; ++draw) {
        for (std::size_t i = 0; i < n; ++i) {
            if (i % 64 == 0) word = splitmix64(state);
            mask[i] = static_cast<std::uint8_t>((word >> (i % 64)) & 1U);
        }
        const double value = detail::expected_accuracy(in, dist, mask.data());
        if (preferred(value, mask.data(), best.value, best.mask.data(), n)) {
            best.value = value;
            best.mask = mask;
        }
        poll.count(1);
    }
    best.evaluations = budget;
    return best;
}

/// The search `options` names, unchecked; asks `should_stop` (if set) every kPollInterval evaluations.
template <class Dist>
Plan search(const Instance& in, const Dist& dist, const SearchOptions& options, const StopCheck& should_stop = {}) {
    Poll poll(should_stop);
    switch (options.method) {
        case Method::exhaustive: return exhaustive(in, dist, poll);
        case Method::greedy: return greedy(in, dist, poll);
        case Method::hybrid: return hybrid(in, dist, options.depth, poll);
        case Method::random: return random_search(in, dist, options.budget, options.seed, poll);
    }
    throw std::invalid_argument("unknown search method");
}

}  // namespace detail

/// The checked entry point: validates the instance and options, then searches. With
/// `should_stop` set it is asked every kPollInterval evaluations, and a true answer
/// abandons the search with einet::Interrupted.
inline Plan search(const Instance& in, const Distribution& dist, const SearchOptions& options,
                   const StopCheck& should_stop = {}) {
    validate(in);
    validate(options, in.remaining(), detail::cdf_cost(dist));
    return std::visit([&](const auto& d) { return detail::search(in, d, options, should_stop); }, dist);
}

/// Many samples' searches in one call, split over `threads` threads (0: one per core;
/// at most kMaxThreads). scores is row-major [count, N]; elapsed and held hold one entry
/// per sample. Writes masks (row-major [count, N - start]), values and evaluation counts.
///
/// Threads take rows one at a time, so the result does not depend on how many run. A
/// thread that cannot be created (std::system_error, e.g. under a process or memory
/// limit) is done without: the threads already running, the calling one included, share
/// its rows. The first exception of any thread (Interrupted from `should_stop`, which
/// every thread asks and the calling thread also asks while it waits for the others,
/// or std::bad_alloc) stops the others and is rethrown once all of them have been joined.
struct BatchOutput {
    std::uint8_t* masks;
    double* values;
    std::uint64_t* evaluations;
};

inline void search_batch(Span<double> conv, Span<double> branch, const double* scores, std::size_t count,
                         std::size_t start, const double* elapsed, const double* held, Rule rule,
                         const Distribution& dist, const SearchOptions& options, BatchOutput out,
                         std::size_t threads = 0, const StopCheck& should_stop = {}) {
    // Every argument is checked before any thread starts.
    validate_profile(conv, branch);
    const std::size_t num_blocks = conv.size();
    for (std::size_t row = 0; row < count; ++row) {
        validate_scores({scores + row * num_blocks, num_blocks}, num_blocks);
        validate_state(start, elapsed[row], held[row], num_blocks);
    }
    const std::size_t n = num_blocks - start;
    validate(options, n, detail::cdf_cost(dist));
    if (threads > kMaxThreads) {
        throw std::invalid_argument("threads=" + std::to_string(threads) + " refused: at most " +
                                    std::to_string(kMaxThreads) + " (0: one per core)");
    }
    if (threads == 0) threads = std::min<std::size_t>(std::max(1U, std::thread::hardware_concurrency()), kMaxThreads);
    threads = std::min(threads, std::max<std::size_t>(count, 1));

    std::atomic<std::size_t> next_row{0};
    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    std::exception_ptr error;
    auto fail = [&](std::exception_ptr e) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::move(e);
        failed.store(true);
    };
    const StopCheck stop = [&] { return failed.load(std::memory_order_relaxed) || (should_stop && should_stop()); };
    auto work = [&]() noexcept {
        try {
            while (!failed.load(std::memory_order_relaxed)) {
                const std::size_t row = next_row.fetch_add(1);
                if (row >= count) return;
                const Instance in{conv, branch, {scores + row * num_blocks, num_blocks}, start, elapsed[row],
                                  held[row], rule};
                const Plan plan =
                    std::visit([&](const auto& d) { return detail::search(in, d, options, stop); }, dist);
                std::copy(plan.mask.begin(), plan.mask.end(), out.masks + row * n);
                out.values[row] = plan.value;
                out.evaluations[row] = plan.evaluations;
            }
        } catch (...) {
            fail(std::current_exception());
        }
    };

    std::mutex done_mutex;
    std::condition_variable done_cv;
    std::size_t finished = 0;
    std::vector<std::thread> workers;
    struct JoinAll {  // joins on every path: a joinable std::thread destroyed would std::terminate
        std::vector<std::thread>& threads;
        ~JoinAll() {
            for (auto& thread : threads) {
                if (thread.joinable()) thread.join();
            }
        }
    } join_all{workers};
    workers.reserve(threads - 1);
    for (std::size_t t = 1; t < threads; ++t) {
        try {
            workers.emplace_back([&] {
                work();
                {
                    const std::lock_guard<std::mutex> lock(done_mutex);
                    ++finished;
                }
                done_cv.notify_one();
            });
        } catch (const std::system_error&) {
            break;  // no more threads to be had: those running share the rows
        }
    }
    work();
    if (should_stop) {  // keep asking while the other threads finish their last rows
        std::unique_lock<std::mutex> lock(done_mutex);
        while (!done_cv.wait_for(lock, std::chrono::milliseconds(10), [&] { return finished == workers.size(); })) {
            lock.unlock();
            if (!failed.load()) {
                try {
                    if (should_stop()) fail(std::make_exception_ptr(Interrupted()));
                } catch (...) {
                    fail(std::current_exception());
                }
            }
            lock.lock();
        }
    }
    for (auto& worker : workers) worker.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace einet
