// einet's native elastic loop: one sample through a network's compiled blocks and exits (frozen
// AOTInductor packages), its policy and output rule between them, without the GIL and without a Python
// call between two blocks. The semantics are einet.runtime._worker.BlockLoop's, line for line: the same
// clock (steady_clock is CLOCK_MONOTONIC, as Python's perf_counter), the same checks of the deadline, the
// same parts timed, the same answers held. Built by einet.runtime.native against the installed torch.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/extension.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "einet/online.hpp"

namespace {

using Loader = torch::inductor::AOTIModelPackageLoader;
constexpr double NaN = std::numeric_limits<double>::quiet_NaN();

/// The held answer under an output rule, as einet.rules.RunningAnswer computes it (in double, from each
/// exit's float log-probabilities).
class RunningAnswer {
public:
    RunningAnswer(std::string rule, std::vector<double> weights, std::int64_t time_zero_class)
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
        if (static_cast<std::int64_t>(total_.size()) != classes) total_.assign(static_cast<std::size_t>(classes), 0.0);
        const double w = weights_.at(static_cast<std::size_t>(exit_index));
        for (std::int64_t c = 0; c < classes; ++c) {
            const double term = w * static_cast<double>(log_probs[c]);
            total_[static_cast<std::size_t>(c)] = started_ ? total_[static_cast<std::size_t>(c)] + term : term;
        }
        std::int64_t best = 0;
        for (std::int64_t c = 1; c < classes; ++c) if (total_[c] > total_[best]) best = c;
        double sum = 0.0;
        for (std::int64_t c = 0; c < classes; ++c) sum += std::exp(total_[c] - total_[best]);
        prediction = best;
        exit = exit_index;
        confidence = 1.0 / sum;
        started_ = true;
        return confidence;
    }

    std::int64_t prediction = -1, exit = -1;
    double confidence = 0.0;

private:
    bool latest_;
    std::vector<double> weights_;
    std::int64_t time_zero_class_;
    std::vector<double> total_;
    bool started_ = false;
};

/// What decides the branches: a fixed plan (a mask), or EINet's native online session (shared with the
/// Python policy that owns it, under its lock).
struct Policy {
    std::vector<std::uint8_t> mask;
    einet::OnlineSession* session = nullptr;
    std::mutex* lock = nullptr;

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
    const std::vector<double>* conv = nullptr;  // replayed parts' seconds (empty: the real clock)
    const std::vector<double>* branch = nullptr;
    double virtual_now = 0.0;

    bool replaying() const { return conv != nullptr; }
    double now() const {
        if (replaying()) return virtual_now;
        return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    }
};

class NativeLoop {
public:
    NativeLoop(const std::vector<std::string>& blocks, const std::vector<std::string>& exits, const std::string& rule,
               std::vector<double> weights, std::int64_t time_zero_class)
        : running_(rule, std::move(weights), time_zero_class) {
        if (blocks.size() != exits.size() || blocks.empty()) throw std::invalid_argument("one exit per block");
        for (const auto& path : blocks) blocks_.emplace_back(std::make_unique<Loader>(path, "model", false, 1, -1));
        for (const auto& path : exits) exits_.emplace_back(std::make_unique<Loader>(path, "model", false, 1, -1));
    }

    std::size_t num_exits() const { return blocks_.size(); }

    /// Seconds to run every block and exit once, directly, nothing between them: what the loop's own cost is
    /// measured against (experiments/native_loop).
    double direct_chain(std::vector<at::Tensor> x) {
        py::gil_scoped_release release;
        const c10::InferenceMode inference;
        const auto start = std::chrono::steady_clock::now();
        std::vector<at::Tensor> h = std::move(x);
        for (std::size_t i = 0; i < blocks_.size(); ++i) {
            h = blocks_[i]->run(h);
            const at::Tensor log_probs = exits_[i]->run(h).at(0).to(at::kFloat).log_softmax(-1)[0].contiguous();
            if (log_probs.data_ptr<float>() == nullptr) throw std::runtime_error("no scores");
        }
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }

    /// One sample: see einet.runtime.native.NativeEngine.run for the arguments and what comes back.
    py::tuple run(std::vector<at::Tensor> x, double started, double planning, double at, bool queued,
                  const py::object& mask, std::uintptr_t session, std::uintptr_t lock, std::size_t session_size,
                  const py::object& replay) {
        Policy policy;
        if (session != 0) {
            if (session_size != sizeof(einet::OnlineSession)) {
                throw std::invalid_argument("the policy's session was built from another version of einet's planner");
            }
            policy.session = reinterpret_cast<einet::OnlineSession*>(session);
            policy.lock = reinterpret_cast<std::mutex*>(lock);
        } else {
            policy.mask = mask.cast<std::vector<std::uint8_t>>();
            if (policy.mask.size() != num_exits()) throw std::invalid_argument("the plan's mask has another length");
        }
        std::vector<double> replay_conv, replay_branch;
        Clock clock;
        if (!replay.is_none()) {
            const auto parts = replay.cast<std::pair<std::vector<double>, std::vector<double>>>();
            replay_conv = parts.first;
            replay_branch = parts.second;
            clock.conv = &replay_conv;
            clock.branch = &replay_branch;
            clock.virtual_now = started + planning;
        }
        Outcome out;
        {
            py::gil_scoped_release release;
            out = blocks_loop(std::move(x), started, planning, at, queued, policy, clock);
        }
        if (!out.error.empty()) throw py::value_error(out.error);
        py::list answers, times;
        for (const auto& a : out.answers) {
            answers.append(py::make_tuple(a.finished, a.exit, a.held_exit < 0 ? py::object(py::none()) : py::int_(a.held_exit),
                                          a.prediction < 0 ? py::object(py::none()) : py::int_(a.prediction), a.confidence));
        }
        for (const auto& t : out.times) times.append(py::make_tuple(t.block, t.conv, t.branch));
        py::object in_flight = out.in_flight_block < 0 ? py::object(py::none())
                                                       : py::object(py::make_tuple(out.in_flight_block, out.in_flight_branch,
                                                                                   out.in_flight_since));
        return py::make_tuple(out.stopped, answers, times, in_flight, out.planning, out.dispatch, out.plans);
    }

private:
    struct Answer {
        double finished;
        std::int64_t exit, held_exit, prediction;
        double confidence;
    };
    struct Part {
        std::int64_t block;
        double conv, branch;
    };
    struct Outcome {
        bool stopped = false;
        std::vector<Answer> answers;
        std::vector<Part> times;
        std::int64_t in_flight_block = -1;
        bool in_flight_branch = false;
        double in_flight_since = 0.0, planning = 0.0, dispatch = NaN;
        std::vector<double> plans;  // each re-planning step's seconds
        std::string error;
    };

    /// BlockLoop._blocks, in C++ (the same statements in the same order).
    Outcome blocks_loop(std::vector<at::Tensor> h, double started, double planning, double at, bool queued,
                        const Policy& policy, Clock& clock) {
        Outcome out;
        out.planning = planning;
        const c10::InferenceMode inference;
        if (clock.now() > at) {  // interrupted before its turn came
            out.stopped = true;
            return out;
        }
        if (policy.session != nullptr) {
            const std::lock_guard<std::mutex> guard(*policy.lock);
            policy.session->begin();
        }
        running_.reset();
        bool pending = false;
        std::size_t pending_block = 0;
        double pending_signal = 0.0, pending_elapsed = 0.0;
        double mark = started + planning;
        if (!queued) out.dispatch = clock.now() - mark;
        const std::size_t n = num_exits();
        for (std::size_t i = 0; i < n; ++i) {
            if (mark > at) {
                out.stopped = true;
                return out;
            }
            set_in_flight(out, i, false, mark - started);
            h = blocks_[i]->run(h);
            if (clock.replaying()) clock.virtual_now += (*clock.conv)[i];
            double now = clock.now();
            if (pending) {
                policy.observe(pending_block, pending_signal, pending_elapsed);
                const double after = clock.now();
                out.planning += after - now;
                out.plans.push_back(after - now);
                now = after;
                pending = false;
            }
            if (now > at) {
                out.times.push_back({static_cast<std::int64_t>(i), now - mark, NaN});
                out.stopped = true;
                return out;
            }
            if (!policy.run_branch(i)) {
                out.times.push_back({static_cast<std::int64_t>(i), now - mark, NaN});
                mark = now;
                continue;
            }
            set_in_flight(out, i, true, now - started);
            const at::Tensor log_probs = exits_[i]->run(h).at(0).to(at::kFloat).log_softmax(-1)[0].contiguous();
            const double signal = running_.add(static_cast<std::int64_t>(i), log_probs.data_ptr<float>(),
                                               log_probs.size(0));
            if (!std::isfinite(signal)) {
                out.error = "exit " + std::to_string(i) + " answered with non-finite scores: the input (or the network) "
                            "holds NaN or inf values, and no answer can be trusted";
                return out;
            }
            if (clock.replaying()) clock.virtual_now += (*clock.branch)[i];
            const double finished = clock.now();
            out.answers.push_back({finished - started, static_cast<std::int64_t>(i), running_.exit, running_.prediction,
                                   running_.confidence});
            out.times.push_back({static_cast<std::int64_t>(i), now - mark, finished - now});
            mark = finished;
            if (policy.session != nullptr) {
                pending = true;
                pending_block = i;
                pending_signal = signal;
                pending_elapsed = finished - started;
            }
        }
        if (pending) policy.observe(pending_block, pending_signal, pending_elapsed);
        return out;
    }

    static void set_in_flight(Outcome& out, std::size_t block, bool branch, double since) {
        out.in_flight_block = static_cast<std::int64_t>(block);
        out.in_flight_branch = branch;
        out.in_flight_since = since;
    }

    std::vector<std::unique_ptr<Loader>> blocks_, exits_;
    RunningAnswer running_;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.doc() = "einet's native elastic loop (built by einet.runtime.native against the installed torch)";
    m.attr("SESSION_SIZE") = sizeof(einet::OnlineSession);
    py::class_<NativeLoop>(m, "NativeLoop")
        .def(py::init<const std::vector<std::string>&, const std::vector<std::string>&, const std::string&,
                      std::vector<double>, std::int64_t>(),
             py::arg("blocks"), py::arg("exits"), py::arg("rule"), py::arg("weights"), py::arg("time_zero_class"))
        .def_property_readonly("num_exits", &NativeLoop::num_exits)
        .def("direct_chain", &NativeLoop::direct_chain, py::arg("x"))
        .def("run", &NativeLoop::run, py::arg("x"), py::arg("started"), py::arg("planning"), py::arg("at"),
             py::arg("queued"), py::arg("mask"), py::arg("session"), py::arg("lock"), py::arg("session_size"),
             py::arg("replay"));
}
