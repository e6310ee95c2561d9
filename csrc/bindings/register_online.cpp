// Binds EINet's online loop: OnlineSession (the per-sample session held natively, behind one
// lock) and online_step (predict every exit's score, then search the remaining blocks).
// The session also goes to and from text (save, load: einet/session_file.hpp).
#include <cstddef>
#include <cstdint>
#include <istream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"
#include "einet/online.hpp"
#include "einet/session_file.hpp"

namespace einet_binding {
/// One OnlineSession and the lock that keeps its state consistent when several Python threads
/// use it: observe() runs without the GIL, so begin() or another observe() could otherwise
/// change the session under it.
struct LockedSession {
    template <class... Args>
    explicit LockedSession(Args&&... args) : session(std::forward<Args>(args)...) {}
    einet::OnlineSession session;
    std::mutex mutex;
};
}  // namespace einet_binding

namespace pybind11 {
namespace detail {
template <>
class type_caster<einet_binding::LockedSession> : public einet_binding::ConstructedCaster<einet_binding::LockedSession> {};
}  // namespace detail
}  // namespace pybind11

namespace einet_binding {
namespace {

/// An exit index argument: a Python int (numpy integers too; bool refused) in [-1, n).
std::int64_t exit_index(const py::handle& value, const char* name, std::size_t n) {
    const auto refuse_type = [&] {
        return py::type_error(std::string(name) + " must be an int (an exit index, or -1 for none), got " +
                              std::string(py::repr(value)));
    };
    if (PyBool_Check(value.ptr()) || !PyIndex_Check(value.ptr())) throw refuse_type();
    PyObject* index = PyNumber_Index(value.ptr());
    if (index == nullptr) {  // e.g. numpy.bool_, whose __index__ raises
        PyErr_Clear();
        throw refuse_type();
    }
    const auto number = py::reinterpret_steal<py::int_>(index);
    int overflow = 0;
    const long long parsed = PyLong_AsLongLongAndOverflow(number.ptr(), &overflow);
    if (overflow == 0 && parsed == -1 && PyErr_Occurred()) throw py::error_already_set();
    if (overflow != 0 || parsed < -1 || parsed >= static_cast<long long>(n)) {
        throw py::value_error(std::string(name) + "=" + std::string(py::str(number)) +
                              " must be -1 or an exit in [0, " + std::to_string(n) + ")");
    }
    return static_cast<std::int64_t>(parsed);
}

}  // namespace

/// EINet's online loop: the per-sample session and the single online step.
void register_online(py::module_& m) {
    py::class_<LockedSession>(m, "OnlineSession",
                              "EINet's per-sample loop held natively: begin(), run_branch(block), "
                              "observe(block, confidence, elapsed). Safe to share between threads (one lock).")
        .def(py::init([](const einet::Predictor& predictor, const Doubles& conv, const Doubles& branch,
                         const py::handle& dist_object, const std::string& rule,
                         const einet::SearchOptions& options, const py::array& first_plan, double margin) {
                 const auto conv_view = vector_of(conv, "conv");
                 const auto branch_view = vector_of(branch, "branch");
                 const auto plan = plan_bytes(first_plan);
                 if (plan.ndim() != 1) {
                     throw std::invalid_argument("first_plan must be 1-D, got shape " + shape_of(plan));
                 }
                 return new LockedSession(
                     predictor, std::vector<double>(conv_view.begin(), conv_view.end()),
                     std::vector<double>(branch_view.begin(), branch_view.end()), to_distribution(dist_object),
                     einet::parse_rule(rule), options,
                     std::vector<std::uint8_t>(plan.data(), plan.data() + plan.size()), margin);
             }),
             py::arg("predictor"), py::arg("conv"), py::arg("branch"), py::arg("dist"), py::arg("rule"),
             py::arg("options"), py::arg("first_plan"), py::arg("margin"))
        // Only observe holds the lock without the GIL, and it never asks for the GIL while it
        // holds the lock, so begin and run_branch may wait for the lock with the GIL held (they
        // stay cheap calls between two blocks of the inference): no thread can deadlock on it.
        .def("begin",
             [](LockedSession& s) {
                 const std::lock_guard<std::mutex> lock(s.mutex);
                 s.session.begin();
             })
        .def("run_branch",
             [](LockedSession& s, std::size_t block) {
                 const std::lock_guard<std::mutex> lock(s.mutex);
                 return s.session.run_branch(block);
             },
             py::arg("block"))
        .def("observe",
             [](LockedSession& s, std::size_t block, double confidence, double elapsed) {
                 const std::lock_guard<std::mutex> lock(s.mutex);
                 s.session.observe(block, confidence, elapsed);
             },
             py::arg("block"), py::arg("confidence"), py::arg("elapsed"), py::call_guard<py::gil_scoped_release>())
        .def("save",
             [](LockedSession& s) {
                 const std::lock_guard<std::mutex> lock(s.mutex);
                 std::ostringstream out;
                 einet::write_session(out, s.session);
                 return out.str();
             },
             "The session file (docs/design.md section 8): what the session was made from, as text that "
             "OnlineSession.load, or einet/session_file.hpp's read_session in C++, makes the same session from.")
        .def_static(
            "load",
            [](const std::string& text) {
                std::istringstream in(text);
                auto session = std::make_unique<LockedSession>(einet::read_session(in));
                if (!(in >> std::ws).eof()) {
                    throw std::invalid_argument("einet session file: text after its last line, 'end'");
                }
                return session;
            },
            py::arg("text"),
            "The session a save() wrote, at begin(). ValueError naming the line, keyword and value for a "
            "malformed, truncated or other-version file.")
        // For einet's native loop (einet.runtime.native), a separate module built against the same header: the
        // session's and its lock's addresses, and the session's size (the loop refuses a session of another
        // layout). Valid while this object lives; the loop holds the lock while it uses the session.
        .def("_native_handle", [](LockedSession& s) {
            return py::make_tuple(reinterpret_cast<std::uintptr_t>(&s.session),
                                  reinterpret_cast<std::uintptr_t>(&s.mutex), sizeof(einet::OnlineSession));
        });

    m.def(
        "online_step",
        [](const einet::Predictor& predictor, const Doubles& observed, const py::array& mask, const Doubles& conv,
           const Doubles& branch, const py::handle& dist_object, const einet::SearchOptions& options,
           std::size_t start, double elapsed, const py::handle& held_exit, double held_default,
           const std::string& rule) {
            const auto dist = to_distribution(dist_object);
            const auto conv_view = vector_of(conv, "conv");
            const auto branch_view = vector_of(branch, "branch");
            const auto observed_view = vector_of(observed, "observed");
            const auto held_index = exit_index(held_exit, "held_exit", conv_view.size());
            const auto bytes = observation_mask(mask, conv_view.size());
            const auto parsed_rule = einet::parse_rule(rule);
            const einet::OnlineStep step = without_gil_interruptibly([&](const einet::StopCheck& stop) {
                return einet::online_step(predictor, conv_view, branch_view, observed_view,
                                          {bytes.data(), static_cast<std::size_t>(bytes.shape(0))}, start, elapsed,
                                          held_index, held_default, parsed_rule, dist, options, stop);
            });
            py::array_t<double> scores(static_cast<py::ssize_t>(step.scores.size()));
            std::copy(step.scores.begin(), step.scores.end(), scores.mutable_data());
            return py::make_tuple(as_bool_array(step.plan.mask), step.plan.value, step.plan.evaluations, scores,
                                  step.held);
        },
        py::arg("predictor"), py::arg("observed"), py::arg("mask"), py::arg("conv"), py::arg("branch"),
        py::arg("dist"), py::arg("options"), py::arg("start"),
        py::arg("elapsed"), py::arg("held_exit"), py::arg("held_default"), py::arg("rule"),
        "Predict every exit's score, then search the remaining blocks: (mask, value, evaluations, scores, held). "
        "held_exit: an int, -1 (none: held_default is credited) or an observed exit in [0, N).");
}

}  // namespace einet_binding
