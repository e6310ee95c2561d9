// The native loop's worker thread (einet.runtime._worker.Worker in C++): runs the samples handed to it, one at
// a time, while each caller waits on its own (Job::wait_until) and returns at its deadline. Python-free; used
// by einet.runtime.native's threaded driver and by the Python-free runtime (bundle.hpp).
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "loop.hpp"

namespace einet::native {

/// A long-lived thread that runs the jobs handed to it one at a time (einet.runtime._worker.Worker): its
/// caller waits on the job (Job::wait_for, Job::wait_until) until the deadline or its interrupt, and returns
/// the answer then held while the part in flight runs on. It runs nothing but the loop (learning from the
/// samples is its caller's: einet.runtime.native.NativeDriver's learner thread).
class Worker {
public:
    Worker(Loop& loop, int threads) : loop_(loop), threads_(threads), thread_([this] { serve(); }) {}

    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    ~Worker() {
        stop();
        if (thread_.joinable()) thread_.join();
    }

    /// Hand `job` over; it is queued (job->queued) when an earlier one is still running.
    void submit(const std::shared_ptr<Job>& job) {
        {
            const std::lock_guard<std::mutex> guard(mutex_);
            if (stopping_) throw std::runtime_error("this runtime is closed");
            // (a job whose loop is done, its worker about to take the next, holds nothing back)
            job->queued = !jobs_.empty() || (running_ && !running_->done());
            ++pending_;
            jobs_.push_back(job);
        }
        wake_.notify_one();
    }

    /// Wait until no job is handed over or running (true) or `seconds` pass (false).
    bool wait_idle(double seconds) {
        std::unique_lock<std::mutex> guard(mutex_);
        return wait_for_seconds(idle_, guard, seconds, [&] { return pending_ == 0; });
    }

    /// End the thread after the jobs handed over; never blocks.
    void stop() {
        {
            const std::lock_guard<std::mutex> guard(mutex_);
            stopping_ = true;
        }
        wake_.notify_one();
    }

    /// After stop(): wait up to `seconds` for the thread to end (true once it has, and is joined).
    bool join_for(double seconds) {
        {
            std::unique_lock<std::mutex> guard(mutex_);
            if (!wait_for_seconds(idle_, guard, seconds, [&] { return exited_; })) return false;
        }
        if (thread_.joinable()) thread_.join();
        return true;
    }

private:
    void serve() {
        at::set_num_threads(threads_);
        Clock clock;
        std::unique_lock<std::mutex> guard(mutex_);
        while (true) {
            wake_.wait(guard, [&] { return !jobs_.empty() || stopping_; });
            if (jobs_.empty()) break;
            running_ = std::move(jobs_.front());
            jobs_.pop_front();
            guard.unlock();
            loop_.run(*running_, clock);
            guard.lock();
            running_.reset();
            --pending_;
            idle_.notify_all();
        }
        exited_ = true;
        idle_.notify_all();
    }

    Loop& loop_;
    const int threads_;
    std::mutex mutex_;
    std::condition_variable wake_, idle_;  // wake_: jobs and stop; idle_: pending_ and exited_
    std::deque<std::shared_ptr<Job>> jobs_;
    std::shared_ptr<Job> running_;  // the job whose loop runs (its input and policy are its caller's to free)
    int pending_ = 0;  // jobs handed over and not yet ended
    bool stopping_ = false, exited_ = false;
    std::thread thread_;  // last: started once everything it reads is made
};

}  // namespace einet::native
