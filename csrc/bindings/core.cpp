// pybind11 glue for the header-only core: converts, checks shapes, releases the GIL.
// Every argument error surfaces in Python as ValueError (std::invalid_argument), or
// TypeError for an argument of the wrong type. The long searches stay interruptible:
// Ctrl-C (any Python signal handler that raises) ends them within about 0.1 s.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "einet/distributions.hpp"
#include "einet/objective.hpp"
#include "einet/online.hpp"
#include "einet/predictor.hpp"
#include "einet/search.hpp"

namespace py = pybind11;

namespace einet_binding {
/// pybind11 (through 3.1 at least: pybind/pybind11#6153) lets `Cls.__new__(Cls)` make an instance
/// whose C++ object was never constructed, and hands it to bound code as if it were one: a
/// Uniform with garbage bounds, a crash for Empirical, Predictor and OnlineSession. Every einet
/// type therefore loads through a caster that first checks that the object was constructed.
inline bool unconstructed(py::handle src, const std::type_info& type) {
    const py::detail::type_info* info = py::detail::get_type_info(type);
    if (info == nullptr || !src || !PyObject_TypeCheck(src.ptr(), info->type)) return false;
    return !reinterpret_cast<py::detail::instance*>(src.ptr())->get_value_and_holder().holder_constructed();
}

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
#define EINET_CONSTRUCTED_CASTER(T)                                                                           \
    template <>                                                                                               \
    class type_caster<T> : public type_caster_base<T> {                                                       \
    public:                                                                                                   \
        bool load(handle src, bool convert) {                                                                 \
            if (einet_binding::unconstructed(src, typeid(T))) {                                              \
                throw value_error(std::string(py::str(py::type::of(src).attr("__name__"))) +                  \
                                  " object was never initialised (made by __new__ without __init__)");        \
            }                                                                                                 \
            return type_caster_base<T>::load(src, convert);                                                   \
        }                                                                                                     \
    }
EINET_CONSTRUCTED_CASTER(einet::Uniform);
EINET_CONSTRUCTED_CASTER(einet::Normal);
EINET_CONSTRUCTED_CASTER(einet::Exponential);
EINET_CONSTRUCTED_CASTER(einet::Empirical);
EINET_CONSTRUCTED_CASTER(einet::Deterministic);
EINET_CONSTRUCTED_CASTER(einet::Predictor);
EINET_CONSTRUCTED_CASTER(einet_binding::LockedSession);
#undef EINET_CONSTRUCTED_CASTER
}  // namespace detail
}  // namespace pybind11

namespace {

using einet_binding::LockedSession;

using Doubles = py::array_t<double, py::array::c_style | py::array::forcecast>;

std::string shape_of(const py::array& a) {
    std::ostringstream out;
    out << "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) out << (d ? ", " : "") << a.shape(d);
    out << (a.ndim() == 1 ? ",)" : ")");
    return out.str();
}

einet::Span<double> vector_of(const Doubles& a, const char* name) {
    if (a.ndim() != 1) {
        throw std::invalid_argument(std::string(name) + " must be 1-D, got shape " + shape_of(a));
    }
    return {a.data(), static_cast<std::size_t>(a.shape(0))};
}

/// Plans arrive as bool (viewed as bytes, zero-copy) or integer arrays holding only 0 and 1;
/// anything else would be silently truncated by a cast, so it is refused.
py::array_t<std::uint8_t, py::array::c_style> plan_bytes(const py::array& mask) {
    const char kind = mask.dtype().kind();
    if (kind == 'b') {
        return py::array_t<std::uint8_t, py::array::c_style>::ensure(
            py::array(mask).attr("view")(py::dtype::of<std::uint8_t>()));
    }
    if (kind != 'i' && kind != 'u' && mask.size() != 0) {
        throw std::invalid_argument("a plan must hold booleans or the integers 0 and 1, got dtype " +
                                    std::string(py::str(mask.dtype())));
    }
    // An empty plan (nothing left to run) may come as any dtype, e.g. np.asarray([]).
    auto wide = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(mask);
    py::array_t<std::uint8_t, py::array::c_style> bytes(std::vector<py::ssize_t>(wide.shape(), wide.shape() + wide.ndim()));
    const std::int64_t* in = wide.data();
    std::uint8_t* out = bytes.mutable_data();
    for (py::ssize_t i = 0; i < wide.size(); ++i) {
        if (in[i] != 0 && in[i] != 1) {
            throw std::invalid_argument("a plan must hold only 0 and 1, got " + std::to_string(in[i]));
        }
        out[i] = static_cast<std::uint8_t>(in[i]);
    }
    return bytes;
}

einet::Instance make_instance(const Doubles& scores, const Doubles& conv, const Doubles& branch, std::size_t start,
                              double elapsed, double held, const std::string& rule) {
    return einet::Instance{vector_of(conv, "conv"),    vector_of(branch, "branch"), vector_of(scores, "scores"),
                           start, elapsed, held, einet::parse_rule(rule)};
}

/// The native distribution behind a Python one (a copy: O(1) for every type).
einet::Distribution to_distribution(const py::handle& dist) {
    if (py::isinstance<einet::Uniform>(dist)) return dist.cast<einet::Uniform>();
    if (py::isinstance<einet::Normal>(dist)) return dist.cast<einet::Normal>();
    if (py::isinstance<einet::Exponential>(dist)) return dist.cast<einet::Exponential>();
    if (py::isinstance<einet::Empirical>(dist)) return dist.cast<einet::Empirical>();
    if (py::isinstance<einet::Deterministic>(dist)) return dist.cast<einet::Deterministic>();
    throw py::type_error("dist must be an einet distribution (Uniform, Normal, Exponential, Empirical, "
                         "Deterministic), got " + std::string(py::str(py::type::of(dist).attr("__name__"))));
}

py::array_t<bool> as_bool_array(const std::vector<std::uint8_t>& mask) {
    py::array_t<bool> out(static_cast<py::ssize_t>(mask.size()));
    std::copy(mask.begin(), mask.end(), out.mutable_data());
    return out;
}

einet::Predictor make_predictor(const std::vector<Doubles>& weights, const std::vector<Doubles>& biases,
                                bool calibrated) {
    if (weights.size() != biases.size()) {
        throw std::invalid_argument("got " + std::to_string(weights.size()) + " weight matrices but " +
                                    std::to_string(biases.size()) + " bias vectors");
    }
    std::vector<einet::DenseLayer> layers;
    for (std::size_t k = 0; k < weights.size(); ++k) {
        if (weights[k].ndim() != 2) {
            throw std::invalid_argument("weight " + std::to_string(k) + " must be 2-D [out, in], got shape " +
                                        shape_of(weights[k]));
        }
        const auto bias = vector_of(biases[k], "bias");
        einet::DenseLayer layer;
        layer.outputs = static_cast<std::size_t>(weights[k].shape(0));
        layer.inputs = static_cast<std::size_t>(weights[k].shape(1));
        layer.weight.assign(weights[k].data(), weights[k].data() + weights[k].size());
        layer.bias.assign(bias.begin(), bias.end());
        layers.push_back(std::move(layer));
    }
    return einet::Predictor(std::move(layers), calibrated);
}

py::array_t<std::uint8_t, py::array::c_style> observation_mask(const py::array& mask, std::size_t n) {
    auto bytes = plan_bytes(mask);
    if (bytes.ndim() != 1 || static_cast<std::size_t>(bytes.shape(0)) != n) {
        throw std::invalid_argument("the observation mask must have shape (" + std::to_string(n) + ",), got " +
                                    shape_of(bytes));
    }
    return bytes;
}

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

/// The native searches' StopCheck while the GIL is released: on the thread that made the
/// call, at most every 50 ms, it takes the GIL and runs the pending Python signal handlers
/// (PyErr_CheckSignals, which acts on the main thread only); when one raises (Ctrl-C:
/// KeyboardInterrupt) it keeps that exception and says stop. Other threads (search_batch's
/// workers) only read the flag, so they never touch Python.
class SignalCheck {
public:
    einet::StopCheck stop_check() {
        return [this] { return stopped_.load(std::memory_order_relaxed) || (on_owner() && check_signals()); };
    }

    /// With the GIL held, after the core gave up with einet::Interrupted: raise what the handler raised.
    [[noreturn]] void raise() {
        if (error_) throw py::error_already_set(*error_);
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        throw py::error_already_set();
    }

private:
    bool on_owner() const { return std::this_thread::get_id() == owner_; }

    bool check_signals() {
        const auto now = std::chrono::steady_clock::now();
        if (now - last_ < std::chrono::milliseconds(50)) return false;
        last_ = now;
        const py::gil_scoped_acquire gil;
        if (PyErr_CheckSignals() == 0) return false;
        error_.emplace();  // fetches and clears the handler's exception
        stopped_.store(true);
        return true;
    }

    std::thread::id owner_ = std::this_thread::get_id();
    std::atomic<bool> stopped_{false};
    std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
    std::optional<py::error_already_set> error_;
};

/// Runs call(stop_check) with the GIL released, turning einet::Interrupted back into the Python
/// exception that caused it.
template <class Call>
auto without_gil_interruptibly(Call&& call) {
    SignalCheck signals;
    const einet::StopCheck stop = signals.stop_check();
    try {
        const py::gil_scoped_release release;
        return call(stop);
    } catch (const einet::Interrupted&) {
        signals.raise();
    }
}

/// Entry i of a distribution's pickled state, which must be a tuple of `size` numbers:
/// ValueError or TypeError for any other state (a crafted pickle), never a C++ cast error.
double state_number(const py::tuple& state, std::size_t size, std::size_t i, const char* type) {
    if (state.size() != size) {
        throw py::value_error(std::string(type) + " state must be a tuple of " + std::to_string(size) +
                              " numbers, got " + std::to_string(state.size()) + " entries");
    }
    const py::handle entry = state[i];
    if (!PyFloat_Check(entry.ptr()) && !PyLong_Check(entry.ptr())) {
        throw py::type_error(std::string(type) + " state entries must be numbers, got " +
                             std::string(py::repr(entry)));
    }
    const double value = PyFloat_AsDouble(entry.ptr());
    if (value == -1.0 && PyErr_Occurred()) {  // an int too large for a double
        PyErr_Clear();
        throw py::value_error(std::string(type) + " state entry " + std::string(py::repr(entry)) +
                              " does not fit in a float");
    }
    return value;
}

template <class Dist>
py::array_t<double> vectorized_cdf(const Dist& dist, const Doubles& t) {
    py::array_t<double> out(std::vector<py::ssize_t>(t.shape(), t.shape() + t.ndim()));
    const double* in = t.data();
    double* values = out.mutable_data();
    for (py::ssize_t i = 0; i < t.size(); ++i) values[i] = dist.cdf(in[i]);
    return out;
}

template <class Dist, class Class>
void add_cdf(Class& cls) {
    cls.def("cdf", [](const Dist& d, double t) { return d.cdf(t); }, py::arg("t"),
            "F(t) for one time, in seconds. NaN gives NaN (every distribution); F(-inf) = 0, F(inf) = 1.");
    cls.def("cdf", &vectorized_cdf<Dist>, py::arg("t"),
            "F(t) elementwise over an array of times; NaN entries give NaN.");
}

/// How each distribution differs from the others in Python: its name, docstring, constructor
/// and fields, repr and pickled state. The class itself, __repr__, pickling and cdf are bound
/// once for all five by bind_distribution.
template <class Dist>
struct DistributionBinding;

std::string float_repr(double value) { return std::string(py::repr(py::float_(value))); }

template <>
struct DistributionBinding<einet::Uniform> {
    static constexpr const char* name = "Uniform";
    static constexpr const char* doc = "Exit time uniform on [low, high]: F(t) = (t - low) / (high - low), clamped.";
    static void define(py::class_<einet::Uniform>& cls) {
        cls.def(py::init<double, double>(), py::arg("low"), py::arg("high"))
            .def_readonly("low", &einet::Uniform::low)
            .def_readonly("high", &einet::Uniform::high);
    }
    static std::string repr(const einet::Uniform& d) {
        return "Uniform(low=" + float_repr(d.low) + ", high=" + float_repr(d.high) + ")";
    }
    static auto state(const einet::Uniform& d) { return py::make_tuple(d.low, d.high); }
    static einet::Uniform from_state(const py::tuple& s) {
        return einet::Uniform(state_number(s, 2, 0, name), state_number(s, 2, 1, name));
    }
};

template <>
struct DistributionBinding<einet::Normal> {
    static constexpr const char* name = "Normal";
    static constexpr const char* doc =
        "Exit time normal(mean, std) truncated to t >= 0 and renormalised. F keeps its "
        "relative precision in both tails (also when nearly all mass lies below 0); "
        "refused when the mass at t >= 0 is below the smallest normal double.";
    static void define(py::class_<einet::Normal>& cls) {
        cls.def(py::init<double, double>(), py::arg("mean"), py::arg("std"))
            .def_readonly("mean", &einet::Normal::mean)
            .def_readonly("std", &einet::Normal::std);
    }
    static std::string repr(const einet::Normal& d) {
        return "Normal(mean=" + float_repr(d.mean) + ", std=" + float_repr(d.std) + ")";
    }
    static auto state(const einet::Normal& d) { return py::make_tuple(d.mean, d.std); }
    static einet::Normal from_state(const py::tuple& s) {
        return einet::Normal(state_number(s, 2, 0, name), state_number(s, 2, 1, name));
    }
};

template <>
struct DistributionBinding<einet::Exponential> {
    static constexpr const char* name = "Exponential";
    static constexpr const char* doc = "Exit time exponential: F(t) = 1 - exp(-rate t).";
    static void define(py::class_<einet::Exponential>& cls) {
        cls.def(py::init<double>(), py::arg("rate")).def_readonly("rate", &einet::Exponential::rate);
    }
    static std::string repr(const einet::Exponential& d) { return "Exponential(rate=" + float_repr(d.rate) + ")"; }
    static auto state(const einet::Exponential& d) { return py::make_tuple(d.rate); }
    static einet::Exponential from_state(const py::tuple& s) { return einet::Exponential(state_number(s, 1, 0, name)); }
};

template <>
struct DistributionBinding<einet::Empirical> {
    static constexpr const char* name = "Empirical";
    static constexpr const char* doc = "Exit time drawn from measured samples: F(t) = share of samples <= t.";
    static py::array_t<double> samples(const einet::Empirical& d) {
        return py::array_t<double>(static_cast<py::ssize_t>(d.sorted->size()), d.sorted->data());
    }
    static einet::Empirical from_samples(const Doubles& samples) {
        const auto view = vector_of(samples, "samples");
        return einet::Empirical(std::vector<double>(view.begin(), view.end()));
    }
    static void define(py::class_<einet::Empirical>& cls) {
        cls.def(py::init([](const Doubles& samples) { return from_samples(samples); }), py::arg("samples"))
            .def_property_readonly("samples", [](const einet::Empirical& d) { return samples(d); },
                                   "The samples, sorted.");
    }
    static std::string repr(const einet::Empirical& d) {
        return "Empirical(<" + std::to_string(d.sorted->size()) + " samples>)";
    }
    static auto state(const einet::Empirical& d) { return py::make_tuple(samples(d)); }
    static einet::Empirical from_state(const py::tuple& s) {
        if (s.size() != 1) {
            throw py::value_error("Empirical state must be a tuple of one array, got " + std::to_string(s.size()) +
                                  " entries");
        }
        const auto samples = Doubles::ensure(s[0]);
        if (!samples) throw py::type_error("Empirical state must hold an array of numbers");
        return from_samples(samples);
    }
};

template <>
struct DistributionBinding<einet::Deterministic> {
    static constexpr const char* name = "Deterministic";
    static constexpr const char* doc = "A known deadline d: F(t) = 1 if t >= d else 0.";
    static void define(py::class_<einet::Deterministic>& cls) {
        cls.def(py::init<double>(), py::arg("deadline")).def_readonly("deadline", &einet::Deterministic::deadline);
    }
    static std::string repr(const einet::Deterministic& d) {
        return "Deterministic(deadline=" + float_repr(d.deadline) + ")";
    }
    static auto state(const einet::Deterministic& d) { return py::make_tuple(d.deadline); }
    static einet::Deterministic from_state(const py::tuple& s) {
        return einet::Deterministic(state_number(s, 1, 0, name));
    }
};

/// One distribution class: its own constructor and fields, then __repr__, pickling and cdf
/// (scalar and array), bound the same way for every distribution.
template <class Dist>
void bind_distribution(py::module_& m) {
    using Binding = DistributionBinding<Dist>;
    py::class_<Dist> cls(m, Binding::name, Binding::doc);
    Binding::define(cls);
    cls.def("__repr__", [](const Dist& d) { return Binding::repr(d); })
        .def(py::pickle([](const Dist& d) { return Binding::state(d); },
                        [](const py::tuple& s) { return Binding::from_state(s); }));
    add_cdf<Dist>(cls);
}

void register_distributions(py::module_& m) {
    bind_distribution<einet::Uniform>(m);
    bind_distribution<einet::Normal>(m);
    bind_distribution<einet::Exponential>(m);
    bind_distribution<einet::Empirical>(m);
    bind_distribution<einet::Deterministic>(m);
}

/// The confidence-score predictor's MLP.
void register_predictor(py::module_& m) {
    py::class_<einet::Predictor>(m, "Predictor",
                                 "The confidence-score predictor's MLP, run natively (ReLU hidden layers, sigmoid out).")
        .def(py::init(&make_predictor), py::arg("weights"), py::arg("biases"), py::arg("calibrated"))
        .def_property_readonly("num_exits", &einet::Predictor::num_exits)
        .def_property_readonly("calibrated", &einet::Predictor::calibrated)
        .def(
            "predict",
            [](const einet::Predictor& predictor, const Doubles& observed, const py::array& mask) {
                const std::size_t n = predictor.num_exits();
                const auto scores = vector_of(observed, "observed");
                if (scores.size() != n) {
                    throw std::invalid_argument("observed must have shape (" + std::to_string(n) + ",), got " +
                                                shape_of(observed));
                }
                const auto bytes = observation_mask(mask, n);
                einet::validate_mask({bytes.data(), n}, n);
                py::array_t<double> out(static_cast<py::ssize_t>(n));
                predictor.predict(scores.ptr, bytes.data(), out.mutable_data());
                return out;
            },
            py::arg("observed"), py::arg("mask"), "Every exit's score from the observed ones.");
}

/// How to search, as one object: the method and its parameters (their caps are checked by the search).
void register_search_options(py::module_& m) {
    using Options = einet::SearchOptions;
    py::class_<Options>(m, "SearchOptions",
                        "How to search: method (exhaustive, greedy, hybrid, random), depth (hybrid's enumerated "
                        "branches), budget and seed (random's plans and generator).")
        .def(py::init([](const std::string& method, std::size_t depth, std::uint64_t budget, std::uint64_t seed) {
                 return Options{einet::parse_method(method), depth, budget, seed};
             }),
             py::arg("method") = "hybrid", py::arg("depth") = Options{}.depth, py::arg("budget") = Options{}.budget,
             py::arg("seed") = Options{}.seed)
        .def_property_readonly("method", [](const Options& o) { return einet::detail::method_name(o.method); })
        .def_readonly("depth", &Options::depth)
        .def_readonly("budget", &Options::budget)
        .def_readonly("seed", &Options::seed)
        .def("__repr__", [](const Options& o) {
            return "SearchOptions(method='" + std::string(einet::detail::method_name(o.method)) + "', depth=" +
                   std::to_string(o.depth) + ", budget=" + std::to_string(o.budget) + ", seed=" +
                   std::to_string(o.seed) + ")";
        });
}

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
             py::arg("block"), py::arg("confidence"), py::arg("elapsed"), py::call_guard<py::gil_scoped_release>());

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

/// The accuracy expectation E(x): of one plan, or of many in one call.
void register_objective(py::module_& m) {
    m.attr("TIE_TOLERANCE") = einet::kTieTolerance;

    m.def(
        "expected_accuracy",
        [](const py::array& mask, const Doubles& scores, const Doubles& conv, const Doubles& branch,
           const py::handle& dist_object, std::size_t start, double elapsed, double held,
           const std::string& rule) -> py::object {
            const auto dist = to_distribution(dist_object);
            const auto in = make_instance(scores, conv, branch, start, elapsed, held, rule);
            const auto bytes = plan_bytes(mask);
            if (bytes.ndim() == 1) {
                const einet::Span<std::uint8_t> plan{bytes.data(), static_cast<std::size_t>(bytes.shape(0))};
                return py::float_(einet::expected_accuracy(in, dist, plan));
            }
            if (bytes.ndim() != 2) {
                throw std::invalid_argument("plans must be 1-D or 2-D, got shape " + shape_of(bytes));
            }
            einet::validate(in);
            if (static_cast<std::size_t>(bytes.shape(1)) != in.remaining()) {
                throw std::invalid_argument("plans have shape " + shape_of(bytes) + " but " +
                                            std::to_string(in.remaining()) + " blocks remain");
            }
            const auto count = static_cast<std::size_t>(bytes.shape(0));
            py::array_t<double> values(static_cast<py::ssize_t>(count));
            double* out = values.mutable_data();
            {
                py::gil_scoped_release release;
                einet::expected_accuracy_batch(in, dist, bytes.data(), count, out);
            }
            return std::move(values);
        },
        py::arg("mask"), py::arg("scores"), py::arg("conv"), py::arg("branch"), py::arg("dist"), py::arg("start"),
        py::arg("elapsed"), py::arg("held"), py::arg("rule"),
        "E of one plan (1-D mask) or of many plans (2-D, one per row).");
}

/// The searches, for one sample or a batch on threads, and their work caps.
void register_search(py::module_& m) {
    m.attr("MAX_EXHAUSTIVE_BLOCKS") = einet::kMaxExhaustiveBlocks;
    m.attr("MAX_HYBRID_DEPTH") = einet::kMaxHybridDepth;
    m.attr("MAX_HYBRID_WORK_LOG2") = einet::kMaxHybridWorkLog2;
    m.attr("MAX_RANDOM_BUDGET") = einet::kMaxRandomBudget;
    m.attr("MAX_SEARCH_WORK_LOG2") = einet::kMaxSearchWorkLog2;
    m.attr("MAX_THREADS") = einet::kMaxThreads;

    m.def(
        "search",
        [](const Doubles& scores, const Doubles& conv, const Doubles& branch, const py::handle& dist_object,
           const einet::SearchOptions& options, std::size_t start,
           double elapsed, double held, const std::string& rule) {
            const auto dist = to_distribution(dist_object);
            const auto in = make_instance(scores, conv, branch, start, elapsed, held, rule);
            const einet::Plan plan = without_gil_interruptibly(
                [&](const einet::StopCheck& stop) { return einet::search(in, dist, options, stop); });
            return py::make_tuple(as_bool_array(plan.mask), plan.value, plan.evaluations);
        },
        py::arg("scores"), py::arg("conv"), py::arg("branch"), py::arg("dist"), py::arg("options"), py::arg("start"),
        py::arg("elapsed"), py::arg("held"), py::arg("rule"),
        "One sample's search: (mask, value, evaluations).");

    m.def(
        "search_batch",
        [](const Doubles& scores, const Doubles& conv, const Doubles& branch, const py::handle& dist_object,
           const einet::SearchOptions& options, std::size_t start,
           const Doubles& elapsed, const Doubles& held, const std::string& rule, std::size_t threads) {
            const auto dist = to_distribution(dist_object);
            const auto conv_view = vector_of(conv, "conv");
            const auto branch_view = vector_of(branch, "branch");
            if (scores.ndim() != 2) {
                throw std::invalid_argument("batch scores must be 2-D [samples, blocks], got shape " + shape_of(scores));
            }
            const auto count = static_cast<std::size_t>(scores.shape(0));
            if (static_cast<std::size_t>(scores.shape(1)) != conv_view.size()) {
                throw std::invalid_argument("batch scores have shape " + shape_of(scores) + " but the ET-profile has " +
                                            std::to_string(conv_view.size()) + " blocks");
            }
            for (const auto* per_sample : {&elapsed, &held}) {
                if (per_sample->ndim() != 1 || static_cast<std::size_t>(per_sample->shape(0)) != count) {
                    throw std::invalid_argument("elapsed and held need one entry per sample (" + std::to_string(count) +
                                                "), got shape " + shape_of(*per_sample));
                }
            }
            if (start > conv_view.size()) einet::validate_state(start, 0.0, 0.0, conv_view.size());
            const auto n = static_cast<py::ssize_t>(conv_view.size() - start);
            const auto parsed_rule = einet::parse_rule(rule);
            py::array_t<bool> masks({static_cast<py::ssize_t>(count), n});
            py::array_t<double> values(static_cast<py::ssize_t>(count));
            py::array_t<std::uint64_t> evaluations(static_cast<py::ssize_t>(count));
            const einet::BatchOutput out{reinterpret_cast<std::uint8_t*>(masks.mutable_data()), values.mutable_data(),
                                         evaluations.mutable_data()};
            without_gil_interruptibly([&](const einet::StopCheck& stop) {
                einet::search_batch(conv_view, branch_view, scores.data(), count, start, elapsed.data(), held.data(),
                                    parsed_rule, dist, options, out, threads, stop);
            });
            return py::make_tuple(masks, values, evaluations);
        },
        py::arg("scores"), py::arg("conv"), py::arg("branch"), py::arg("dist"), py::arg("options"), py::arg("start"),
        py::arg("elapsed"), py::arg("held"), py::arg("rule"),
        py::arg("threads"),
        "Many samples' searches over `threads` cores (0: all, at most MAX_THREADS): (masks, values, evaluations).");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "einet's native planner: exit-time distributions, the accuracy expectation and the searches.";
#ifdef EINET_VERSION
    m.attr("__version__") = EINET_VERSION;
#else
    m.attr("__version__") = "dev";
#endif
    register_distributions(m);
    register_predictor(m);
    register_search_options(m);
    register_online(m);
    register_objective(m);
    register_search(m);
}
