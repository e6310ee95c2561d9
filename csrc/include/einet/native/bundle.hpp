// A bundle exported for the Python-free program (`einet export-native BUNDLE OUT`, python/einet/native_export.py):
// the export folder read and checked (read_export, export_file.hpp), and a runtime over it (Runtime) that answers one sample
// at a time under a deadline as `einet run`'s static, threaded runtime does: its loop (loop.hpp) runs the
// sample on a worker thread while the caller waits until the sample ends or its deadline passes, then returns
// the answer held at that instant. What a C++ application links (CMake target einet::native); the program
// cpp/einet_run.cpp is its example. docs/design.md section 8, "Without Python".
//
// The folder: the compiled block and exit packages, the manifest einet-native.txt (its format is in
// native_export.py's docstring: one keyword and its values per line, numbers as hexadecimal floats, names
// escaped) and, for EINet, its session file (session_file.hpp). Anything malformed, missing or of another
// version is a std::invalid_argument naming the file, the line and the value. The runtime does not adapt:
// the ET-profile, the policy and its plans are those the export was made with.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "export_file.hpp"
#include "worker.hpp"

namespace einet::native {

/// What one sample's inference returns: the held answer (prediction -1: none; exit -1: the time-zero
/// answer or none), whether the deadline stopped it before it ended, and the seconds from the call to the
/// return (replayed: to the replayed end).
struct Answer {
    std::int64_t prediction = -1, exit = -1;
    double confidence = 0.0;
    bool interrupted = false;
    double elapsed = 0.0;
};

/// An export run as `einet run`'s static runtime runs a bundle: one sample at a time, on a worker thread
/// (`threads` intra-op threads) while the caller waits until the sample ends or its deadline passes. Call
/// it from one thread at a time.
class Runtime {
public:
    explicit Runtime(const std::string& folder) : Runtime(read_export(folder)) {}

    explicit Runtime(Export exported)
        : export_(std::move(exported)), session_(read_session_file(export_)), loop_(make_loop(export_)),
          worker_(loop_, export_.threads) {
        policy_.mask = export_.mask;
        if (session_) {
            policy_.session = session_.get();
            policy_.lock = &lock_;
        }
    }

    const Export& exported() const { return export_; }
    Loop& loop() { return loop_; }
    Worker& worker() { return worker_; }
    const Policy& policy() const { return policy_; }

    /// One normalised sample, float32 [1, C, H, W] (InputSpec::prepare makes them), answered by the worker
    /// under `deadline` seconds from this call: the answer held when it ended or when the deadline passed
    /// (an answer published after it does not count). The part then in flight runs on, and a sample called
    /// before it ends waits for it within its own deadline (wait_idle first, as `einet run` does, to start
    /// each sample on an idle device). std::invalid_argument for a wrong input or non-finite scores,
    /// std::runtime_error for a failure in the loop (an earlier sample's: raised by the next call).
    Answer infer(const at::Tensor& x, double deadline = kNoDeadline) {
        check(x, deadline);
        raise_late_failures();
        const double started = steady_seconds();
        const double at = deadline < kNoDeadline ? started + deadline : kNoDeadline;
        auto job = std::make_shared<Job>(std::vector<at::Tensor>{x.contiguous()}, started, 0.0, at, policy_);
        worker_.submit(job);
        const bool done = job->wait_until(at);  // one sleep to the deadline, as einet's native driver waits
        if (!done) job->stop();
        const double elapsed = steady_seconds() - started;
        const Progress progress = job->snapshot();
        if (!progress.done) running_.push_back(job);
        return held(progress, done, deadline, elapsed);
    }

    /// infer() in the caller's thread (with its torch settings) on the export's ET-profile times instead of
    /// the clock: each part advances a virtual clock by its profiled seconds, so that the answers are
    /// deterministic, those of the Python loop replayed on the same times (einet.runtime.replay).
    Answer replay(const at::Tensor& x, double deadline = kNoDeadline) {
        check(x, deadline);
        wait_idle();  // (the worker and this thread share the loop)
        Job job({x.contiguous()}, 0.0, 0.0, deadline, policy_);
        Clock clock;
        clock.conv = &export_.conv;
        clock.branch = &export_.branch;
        loop_.run(job, clock);
        return held(job.progress, true, deadline, job.progress.ended);
    }

    /// Wait until the part an interrupted sample left in flight has ended; raises its failure, if any.
    void wait_idle() {
        worker_.wait_idle(kNoDeadline);
        raise_late_failures();
    }

private:
    static std::unique_ptr<OnlineSession> read_session_file(const Export& exported) {
        if (exported.session.empty()) return nullptr;
        std::ifstream in(exported.session);
        try {
            auto session = std::make_unique<OnlineSession>(read_session(in));
            if (session->conv().size() != exported.num_exits()) {
                throw std::invalid_argument("its session plans " + std::to_string(session->conv().size()) +
                                            " blocks, the network has " + std::to_string(exported.num_exits()));
            }
            return session;
        } catch (const std::invalid_argument& error) {
            throw std::invalid_argument(exported.session + ": " + error.what());
        }
    }

    static Loop make_loop(const Export& exported) {
        RunningAnswer rule(exported.rule, exported.weights, exported.time_zero_class);
        try {
            return Loop(Network(exported.blocks, exported.exits), std::move(rule));
        } catch (const std::exception& error) {
            const std::string what = error.what();
            throw std::invalid_argument(exported.folder + ": its packages cannot be loaded: " +
                                        what.substr(0, what.find('\n')));
        }
    }

    void check(const at::Tensor& x, double deadline) const {
        const InputSpec& in = export_.input;
        if (x.scalar_type() != at::kFloat || x.sizes().vec() != std::vector<std::int64_t>{1, in.channels, in.height,
                                                                                          in.width}) {
            throw std::invalid_argument("the input must be one normalised image, float32 [1, " +
                                        std::to_string(in.channels) + ", " + std::to_string(in.height) + ", " +
                                        std::to_string(in.width) + "]: InputSpec::prepare makes them");
        }
        if (!(deadline >= 0.0)) throw std::invalid_argument("the deadline must be seconds >= 0 (inf for none)");
    }

    /// The failure of a sample the worker ended after its call returned, if any.
    void raise_late_failures() {
        while (!running_.empty() && running_.front()->snapshot().done) {
            const Progress progress = running_.front()->snapshot();
            running_.pop_front();
            raise_if_failed(progress);
        }
    }

    static void raise_if_failed(const Progress& progress) {
        if (progress.non_finite) throw std::invalid_argument(progress.error);
        if (!progress.error.empty()) throw std::runtime_error("the native loop failed: " + progress.error);
    }

    /// The answer held at the deadline or the end (einet.runtime.ElasticRuntime._answer): an answer
    /// published after the deadline does not count.
    Answer held(const Progress& progress, bool done, double deadline, double elapsed) const {
        if (progress.done) raise_if_failed(progress);
        Answer answer;
        answer.interrupted = !(done && !progress.stopped && !(progress.ended > deadline));
        answer.elapsed = elapsed;
        const double cutoff = answer.interrupted ? std::min(elapsed, deadline) : elapsed;
        answer.prediction = export_.time_zero_class;
        for (const Published& published : progress.answers) {
            if (published.finished > cutoff) break;
            answer.prediction = published.prediction;
            answer.exit = published.held_exit;
            answer.confidence = published.confidence;
        }
        return answer;
    }

    Export export_;
    std::unique_ptr<OnlineSession> session_;
    std::mutex lock_;
    Loop loop_;
    Policy policy_;
    std::deque<std::shared_ptr<Job>> running_;  // samples returned while the worker still ran them
    Worker worker_;                   // last: started once the rest is made, stopped first
};

}  // namespace einet::native
