// The Python face of einet's native elastic loop (einet/native/loop.hpp, worker.hpp): built by einet.runtime.native
// against the installed torch. A sample runs without the GIL, in the caller's thread (run) or on the
// loop's worker thread (submit, then the caller waits on the job with the GIL released).
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "einet/native/worker.hpp"

namespace {

namespace native = einet::native;

/// The policy as Python hands it over: a mask (a fixed plan), or the address, lock and size of the native
/// session a Python EINet policy owns (checked against this build's layout).
native::Policy as_policy(const py::object& mask, std::uintptr_t session, std::uintptr_t lock, std::size_t session_size,
                         std::size_t num_exits) {
    native::Policy policy;
    if (session != 0) {
        if (session_size != sizeof(einet::OnlineSession)) {
            throw std::invalid_argument("the policy's session was built from another version of einet's planner");
        }
        policy.session = reinterpret_cast<einet::OnlineSession*>(session);
        policy.lock = reinterpret_cast<std::mutex*>(lock);
    } else {
        policy.mask = mask.cast<std::vector<std::uint8_t>>();
        if (policy.mask.size() != num_exits) throw std::invalid_argument("the plan's mask has another length");
    }
    return policy;
}

/// A job's progress as Python tuples: (done, stopped, answers, times, in_flight, planning, dispatch, plans,
/// ended, non_finite, error), the answers and times as einet.runtime._worker.Job holds them.
py::tuple as_python(const native::Progress& p) {
    py::list answers, times;
    for (const auto& a : p.answers) {
        answers.append(py::make_tuple(a.finished, a.exit, a.held_exit < 0 ? py::object(py::none()) : py::int_(a.held_exit),
                                      a.prediction < 0 ? py::object(py::none()) : py::int_(a.prediction), a.confidence));
    }
    for (const auto& t : p.times) times.append(py::make_tuple(t.block, t.conv, t.branch));
    const py::object in_flight = p.in_flight_block < 0
        ? py::object(py::none())
        : py::object(py::make_tuple(p.in_flight_block, p.in_flight_branch, p.in_flight_since));
    return py::make_tuple(p.done, p.stopped, answers, times, in_flight, p.planning, p.dispatch, p.plans, p.ended,
                          p.non_finite, p.error);
}

/// The loop with its worker (started by start_worker): what einet.runtime.native.NativeEngine holds.
class NativeLoop {
public:
    NativeLoop(const std::vector<std::string>& blocks, const std::vector<std::string>& exits, const std::string& rule,
               std::vector<double> weights, std::int64_t time_zero_class)
        : loop_(native::Network(blocks, exits), native::RunningAnswer(rule, std::move(weights), time_zero_class)) {}

    ~NativeLoop() {
        if (worker_) {
            const py::gil_scoped_release release;  // (joins its thread, which never needs the GIL)
            worker_.reset();
        }
    }

    std::size_t num_exits() const { return loop_.num_exits(); }

    double direct_chain(std::vector<at::Tensor> x) {
        const py::gil_scoped_release release;
        return loop_.direct_chain(std::move(x));
    }

    /// One sample in the caller's thread; `replay`: each part's seconds (conv, branch) instead of the clock.
    py::tuple run(std::vector<at::Tensor> x, double started, double planning, double at, bool queued,
                  const py::object& mask, std::uintptr_t session, std::uintptr_t lock, std::size_t session_size,
                  const py::object& replay) {
        native::Job job(std::move(x), started, planning, at, as_policy(mask, session, lock, session_size, num_exits()));
        job.queued = queued;
        std::pair<std::vector<double>, std::vector<double>> parts;
        native::Clock clock;
        if (!replay.is_none()) {
            parts = replay.cast<std::pair<std::vector<double>, std::vector<double>>>();
            clock.conv = &parts.first;
            clock.branch = &parts.second;
            clock.virtual_now = started + planning;
        }
        {
            const py::gil_scoped_release release;
            loop_.run(job, clock);
        }
        return as_python(job.progress);
    }

    /// Start the worker thread with `threads` intra-op threads.
    void start_worker(int threads) {
        if (worker_) throw std::runtime_error("the worker is already started");
        worker_ = std::make_unique<native::Worker>(loop_, threads);
    }

    /// Hand one sample to the worker; the job to wait on, stop and read. `owner` (the policy whose session the
    /// job reads) is kept alive until the loop is done with the job, whatever Python frees meanwhile.
    std::shared_ptr<native::Job> submit(std::vector<at::Tensor> x, double started, double planning, double at,
                                        const py::object& mask, std::uintptr_t session, std::uintptr_t lock,
                                        std::size_t session_size, py::object owner) {
        auto job = std::make_shared<native::Job>(std::move(x), started, planning, at,
                                                 as_policy(mask, session, lock, session_size, num_exits()));
        kept_.erase(std::remove_if(kept_.begin(), kept_.end(), [](const auto& kept) { return kept.first->done(); }),
                    kept_.end());
        worker().submit(job);
        kept_.emplace_back(job, std::move(owner));
        return job;
    }

    bool wait_idle(double seconds) {
        if (!worker_) return true;
        const py::gil_scoped_release release;
        return worker_->wait_idle(seconds);
    }

    void stop() {
        if (worker_) worker_->stop();
    }

    bool join(double seconds) {
        if (!worker_) return true;
        const py::gil_scoped_release release;
        return worker_->join_for(seconds);
    }

private:
    native::Worker& worker() {
        if (!worker_) throw std::runtime_error("the worker is not started");
        return *worker_;
    }

    native::Loop loop_;
    // Jobs handed to the worker and what they read (declared before it: freed after it has ended, with the GIL)
    std::vector<std::pair<std::shared_ptr<native::Job>, py::object>> kept_;
    std::unique_ptr<native::Worker> worker_;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "einet's native elastic loop (built by einet.runtime.native against the installed torch)";
    m.attr("SESSION_SIZE") = sizeof(einet::OnlineSession);
    py::class_<native::Job, std::shared_ptr<native::Job>>(m, "Job")
        .def("wait", [](native::Job& job, std::optional<double> seconds) {  // (None: no limit)
            const py::gil_scoped_release release;
            return job.wait_for(seconds.value_or(std::numeric_limits<double>::infinity()));
        }, py::arg("seconds"))
        .def("wait_until", [](native::Job& job, double at) {
            const py::gil_scoped_release release;
            return job.wait_until(at);
        }, py::arg("at"))
        .def("stop", &native::Job::stop)
        .def("progress", [](const native::Job& job) { return as_python(job.snapshot()); })
        .def_property_readonly("queued", [](const native::Job& job) { return job.queued; });
    py::class_<NativeLoop>(m, "NativeLoop")
        .def(py::init<const std::vector<std::string>&, const std::vector<std::string>&, const std::string&,
                      std::vector<double>, std::int64_t>(),
             py::arg("blocks"), py::arg("exits"), py::arg("rule"), py::arg("weights"), py::arg("time_zero_class"))
        .def_property_readonly("num_exits", &NativeLoop::num_exits)
        .def("direct_chain", &NativeLoop::direct_chain, py::arg("x"))
        .def("run", &NativeLoop::run, py::arg("x"), py::arg("started"), py::arg("planning"), py::arg("at"),
             py::arg("queued"), py::arg("mask"), py::arg("session"), py::arg("lock"), py::arg("session_size"),
             py::arg("replay"))
        .def("start_worker", &NativeLoop::start_worker, py::arg("threads"))
        .def("submit", &NativeLoop::submit, py::arg("x"), py::arg("started"), py::arg("planning"), py::arg("at"),
             py::arg("mask"), py::arg("session"), py::arg("lock"), py::arg("session_size"), py::arg("owner"))
        .def("wait_idle", &NativeLoop::wait_idle, py::arg("seconds"))
        .def("stop", &NativeLoop::stop)
        .def("join", &NativeLoop::join, py::arg("seconds"));
}
