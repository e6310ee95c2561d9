// einet's native elastic loop, Python-free: one sample through a network's compiled blocks and exits
// (frozen AOTInductor packages), its policy and output rule between them (worker.hpp: the thread that runs
// samples while its caller waits for the deadline or the interrupt). The semantics are
// einet.runtime._worker.BlockLoop's, line for line: the same clock (steady_clock is CLOCK_MONOTONIC, as
// Python's perf_counter), the same checks of the deadline and of the stop request, the same parts timed,
// the same answers held and published as they come.
//
// Needs libtorch (torch's AOTInductor package loader); the planner headers in einet/ do not. Used by the
// Python extension einet.runtime.native builds (native_loop.cpp) and by the Python-free program
// (cpp/einet_run.cpp, CMake target einet::native).
#pragma once

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../online.hpp"

namespace einet::native {

constexpr double NaN = std::numeric_limits<double>::quiet_NaN();

/// Seconds on the steady clock (CLOCK_MONOTONIC: the clock of Python's time.perf_counter on Linux).
inline double steady_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Wait on `cv` until `ready()` (true) or `seconds` pass (false); inf (or any wait too long for the clock):
/// no limit.
template <class Ready>
bool wait_for_seconds(std::condition_variable& cv, std::unique_lock<std::mutex>& guard, double seconds, Ready ready) {
    if (!(seconds < 1e9)) {
        cv.wait(guard, ready);
        return true;
    }
    return cv.wait_for(guard, std::chrono::duration<double>(std::max(seconds, 0.0)), ready);
}

/// The held answer under an output rule, as einet.rules.RunningAnswer computes it (in double, from each
/// exit's float log-probabilities).
class RunningAnswer {
public:
    RunningAnswer(const std::string& rule, std::vector<double> weights, std::int64_t time_zero_class)
        : latest_(rule == "latest"), weights_(std::move(weights)), time_zero_class_(time_zero_class) {
        if (rule != "latest" && rule != "best" && rule != "ensemble") throw std::invalid_argument("unknown rule " + rule);
        if ((rule == "ensemble") != !weights_.empty()) throw std::invalid_argument("ensemble weights go with rule ensemble");
        reset();
    }

    void reset() {
        prediction = time_zero_class_;
        exit = -1;
        confidence = 0.0;
        started_ = false;
    }

    /// A branch finished with these log-probabilities; returns the confidence the policy observes.
    double add(std::int64_t exit_index, const float* log_probs, std::int64_t classes) {
        if (weights_.empty()) {
            std::int64_t best = 0;
            for (std::int64_t c = 1; c < classes; ++c) if (log_probs[c] > log_probs[best]) best = c;
            const double conf = std::exp(static_cast<double>(log_probs[best]));
            if (latest_ || !started_ || conf > confidence) {
                prediction = best;
                exit = exit_index;
                confidence = conf;
            }
            started_ = true;
            return conf;
        }
        const auto n = static_cast<std::size_t>(classes);
        if (total_.size() != n) total_.assign(n, 0.0);
        const double w = weights_.at(static_cast<std::size_t>(exit_index));
        for (std::size_t c = 0; c < n; ++c) {
            const double term = w * static_cast<double>(log_probs[c]);
            total_[c] = started_ ? total_[c] + term : term;
        }
        std::size_t best = 0;
        for (std::size_t c = 1; c < n; ++c) if (total_[c] > total_[best]) best = c;
        double sum = 0.0;
        for (std::size_t c = 0; c < n; ++c) sum += std::exp(total_[c] - total_[best]);
        prediction = static_cast<std::int64_t>(best);
        exit = exit_index;
        confidence = 1.0 / sum;
        started_ = true;
        return confidence;
    }

    std::size_t num_weights() const { return weights_.size(); }

    std::int64_t prediction = -1, exit = -1;
    double confidence = 0.0;

private:
    bool latest_;
    std::vector<double> weights_;
    std::int64_t time_zero_class_;
    std::vector<double> total_;
    bool started_ = false;
};

/// What decides the branches: a fixed plan (a mask), or EINet's online session (under `lock`, which a
/// Python policy owning the session shares; the Python-free program owns both).
struct Policy {
    std::vector<std::uint8_t> mask;
    OnlineSession* session = nullptr;
    std::mutex* lock = nullptr;

    void begin() const {
        if (session == nullptr) return;
        const std::lock_guard<std::mutex> guard(*lock);
        session->begin();
    }
    bool run_branch(std::size_t block) const {
        if (session == nullptr) return mask[block] != 0;
        const std::lock_guard<std::mutex> guard(*lock);
        return session->run_branch(block);
    }
    void observe(std::size_t block, double confidence, double elapsed) const {
        const std::lock_guard<std::mutex> guard(*lock);
        session->observe(block, confidence, elapsed);
    }
};

/// The clock: the real one, or block times replayed (virtual seconds advanced by each part as it ends).
struct Clock {
    const std::vector<double>* conv = nullptr;  // replayed parts' seconds (null: the real clock)
    const std::vector<double>* branch = nullptr;
    double virtual_now = 0.0;

    bool replaying() const { return conv != nullptr; }
    double now() const { return replaying() ? virtual_now : steady_seconds(); }
};

/// An answer published after a finished branch: when (seconds since the call), the exit that finished,
/// and the answer then held under the rule (-1: none).
struct Published {
    double finished;
    std::int64_t exit, held_exit, prediction;
    double confidence;
};

/// A part as the sample ran it: the conv part's seconds, and its branch's (NaN: not run).
struct PartTime {
    std::int64_t block;
    double conv, branch;
};

/// What a sample's loop has published so far (read under Job::mutex while it runs).
struct Progress {
    std::vector<Published> answers;
    std::vector<PartTime> times;
    std::int64_t in_flight_block = -1;  // the part running now: its block, whether its branch, since when
    bool in_flight_branch = false;
    double in_flight_since = 0.0;
    double planning = 0.0;      // seconds spent planning for this sample (a plan made before block 0 included)
    double dispatch = NaN;      // from the call (after its plan) to block 0 starting; NaN when queued
    std::vector<double> plans;  // each re-planning step's seconds
    bool stopped = false;       // stopped by the deadline or the stop request before it ended
    bool done = false;          // the loop is done with the sample
    double ended = std::numeric_limits<double>::infinity();  // when, in seconds since the call
    bool non_finite = false;    // an exit's scores were not finite: no answer can be trusted
    std::string error;          // what went wrong, if anything
};

/// One sample: its input, when its call started and its deadline (on the steady clock), its policy; and
/// what the loop publishes as it runs, under `mutex`, for a caller in another thread.
class Job {
public:
    Job(std::vector<at::Tensor> x, double started, double planning, double at, Policy policy)
        : x(std::move(x)), started(started), at(at), policy(std::move(policy)) {
        progress.planning = planning;
    }

    /// Stop before the next part (from any thread); the part in flight runs to its end.
    void stop() { stop_.store(true, std::memory_order_relaxed); }
    bool stop_requested() const { return stop_.load(std::memory_order_relaxed); }

    /// Wait until the loop is done with the sample (true) or `seconds` pass (false).
    bool wait_for(double seconds) {
        std::unique_lock<std::mutex> guard(mutex);
        return wait_for_seconds(done_, guard, seconds, [&] { return progress.done; });
    }

    /// Wait until the loop is done with the sample (true) or the steady clock reads `at` seconds (false): one
    /// sleep, not a poll (a caller waking every 0.1 ms slowed the worker's blocks by ~40% on two vCPUs).
    bool wait_until(double at) {
        std::unique_lock<std::mutex> guard(mutex);
        if (!(at - steady_seconds() < 1e9)) {  // none, or beyond what the clock's integer type holds
            done_.wait(guard, [&] { return progress.done; });
            return true;
        }
        const auto when = std::chrono::steady_clock::time_point(
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(at)));
        return done_.wait_until(guard, when, [&] { return progress.done; });
    }

    bool done() const {
        const std::lock_guard<std::mutex> guard(mutex);
        return progress.done;
    }

    Progress snapshot() const {
        const std::lock_guard<std::mutex> guard(mutex);
        return progress;
    }

    /// The loop is done: published, and whoever waits is woken.
    void finish(double ended) {
        {
            const std::lock_guard<std::mutex> guard(mutex);
            progress.done = true;
            progress.ended = ended;
        }
        done_.notify_all();
    }

    std::vector<at::Tensor> x;
    const double started, at;
    const Policy policy;
    bool queued = false;  // handed over while the worker was still busy (with an interrupted sample)
    mutable std::mutex mutex;
    Progress progress;

private:
    std::atomic<bool> stop_{false};
    std::condition_variable done_;
};

/// A network's compiled blocks and exits, each a frozen AOTInductor package run by torch's C++ loader.
class Network {
public:
    Network(const std::vector<std::string>& blocks, const std::vector<std::string>& exits) {
        if (blocks.size() != exits.size() || blocks.empty()) throw std::invalid_argument("one exit per block");
        for (const auto& path : blocks) blocks_.emplace_back(std::make_unique<Loader>(path, "model", false, 1, -1));
        for (const auto& path : exits) exits_.emplace_back(std::make_unique<Loader>(path, "model", false, 1, -1));
    }

    std::size_t num_exits() const { return blocks_.size(); }
    std::vector<at::Tensor> block(std::size_t i, const std::vector<at::Tensor>& h) { return blocks_[i]->run(h); }
    /// Exit i's float log-probabilities over the classes, contiguous.
    at::Tensor exit(std::size_t i, const std::vector<at::Tensor>& h) {
        return exits_[i]->run(h).at(0).to(at::kFloat).log_softmax(-1)[0].contiguous();
    }

private:
    using Loader = torch::inductor::AOTIModelPackageLoader;
    std::vector<std::unique_ptr<Loader>> blocks_, exits_;
};

/// The loop of one sample at a time over a network, with the held answer under the output rule.
class Loop {
public:
    Loop(Network network, RunningAnswer rule) : network_(std::move(network)), running_(std::move(rule)) {
        if (running_.num_weights() != 0 && running_.num_weights() != network_.num_exits()) {
            throw std::invalid_argument("the ensemble has " + std::to_string(running_.num_weights()) +
                                        " weights, the network " + std::to_string(network_.num_exits()) + " exits");
        }
    }

    std::size_t num_exits() const { return network_.num_exits(); }

    /// BlockLoop.run: the sample until its last exit or until it is stopped (its deadline passed or its
    /// stop requested, asked before every block and after every conv part). Never throws: an error is
    /// published in the job's progress. The job is finished on return.
    void run(Job& job, Clock& clock) {
        bool stopped = true;
        try {
            const c10::InferenceMode inference;
            if (!(clock.now() > job.at || job.stop_requested())) {  // else interrupted before its turn came
                job.policy.begin();
                running_.reset();
                stopped = blocks(job, clock);
            }
        } catch (const std::exception& error) {
            const std::lock_guard<std::mutex> guard(job.mutex);
            job.progress.error = error.what();
        }
        {
            const std::lock_guard<std::mutex> guard(job.mutex);
            job.progress.stopped = stopped;
        }
        job.finish(clock.now() - job.started);
    }

    /// Seconds to run every block and exit once, directly, nothing between them: what the loop's own cost
    /// is measured against (experiments/native_loop).
    double direct_chain(std::vector<at::Tensor> h) {
        const c10::InferenceMode inference;
        const double start = steady_seconds();
        for (std::size_t i = 0; i < num_exits(); ++i) {
            h = network_.block(i, h);
            if (network_.exit(i, h).data_ptr<float>() == nullptr) throw std::runtime_error("no scores");
        }
        return steady_seconds() - start;
    }

private:
    /// BlockLoop._blocks (the same statements in the same order): true when stopped before the end.
    bool blocks(Job& job, Clock& clock) {
        Progress& out = job.progress;  // written under job.mutex: a caller may read it meanwhile
        const double started = job.started, at = job.at;
        const Policy& policy = job.policy;
        std::vector<at::Tensor> h = std::move(job.x);
        bool pending = false;  // the last branch, not yet told to the policy
        std::size_t pending_block = 0;
        double pending_signal = 0.0, pending_elapsed = 0.0;
        double mark = started + out.planning;  // where the next conv part's time starts
        if (!job.queued) {
            const double dispatch = clock.now() - mark;
            const std::lock_guard<std::mutex> guard(job.mutex);
            out.dispatch = dispatch;
        }
        for (std::size_t i = 0; i < num_exits(); ++i) {
            if (mark > at || job.stop_requested()) return true;
            set_in_flight(job, i, false, mark - started);
            h = network_.block(i, h);
            if (clock.replaying()) clock.virtual_now += (*clock.conv)[i];
            double now = clock.now();
            if (pending) {
                policy.observe(pending_block, pending_signal, pending_elapsed);
                const double after = clock.now();
                const std::lock_guard<std::mutex> guard(job.mutex);
                out.planning += after - now;
                out.plans.push_back(after - now);
                now = after;
                pending = false;
            }
            if (now > at || job.stop_requested()) {
                publish_time(job, {static_cast<std::int64_t>(i), now - mark, NaN});
                return true;
            }
            if (!policy.run_branch(i)) {
                publish_time(job, {static_cast<std::int64_t>(i), now - mark, NaN});
                mark = now;
                continue;
            }
            set_in_flight(job, i, true, now - started);
            const at::Tensor log_probs = network_.exit(i, h);
            const double signal = running_.add(static_cast<std::int64_t>(i), log_probs.data_ptr<float>(),
                                               log_probs.size(0));
            if (!std::isfinite(signal)) {
                const std::lock_guard<std::mutex> guard(job.mutex);
                out.non_finite = true;
                out.error = "exit " + std::to_string(i) + " answered with non-finite scores: the input (or the network) "
                            "holds NaN or inf values, and no answer can be trusted";
                return false;
            }
            if (clock.replaying()) clock.virtual_now += (*clock.branch)[i];
            const double finished = clock.now();
            {
                const std::lock_guard<std::mutex> guard(job.mutex);
                out.answers.push_back({finished - started, static_cast<std::int64_t>(i), running_.exit,
                                       running_.prediction, running_.confidence});
                out.times.push_back({static_cast<std::int64_t>(i), now - mark, finished - now});
            }
            mark = finished;
            if (policy.session != nullptr) {
                pending = true;
                pending_block = i;
                pending_signal = signal;
                pending_elapsed = finished - started;
            }
        }
        if (pending) policy.observe(pending_block, pending_signal, pending_elapsed);
        return false;
    }

    static void set_in_flight(Job& job, std::size_t block, bool branch, double since) {
        const std::lock_guard<std::mutex> guard(job.mutex);
        job.progress.in_flight_block = static_cast<std::int64_t>(block);
        job.progress.in_flight_branch = branch;
        job.progress.in_flight_since = since;
    }

    static void publish_time(Job& job, PartTime part) {
        const std::lock_guard<std::mutex> guard(job.mutex);
        job.progress.times.push_back(part);
    }

    Network network_;
    RunningAnswer running_;
};

}  // namespace einet::native
