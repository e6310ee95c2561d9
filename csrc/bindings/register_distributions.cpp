// Binds the exit-time distributions (Uniform, Normal, Exponential, Empirical, Deterministic):
// constructors, read-only fields, repr, pickling, and cdf for a scalar or an array of times.
#include <cstddef>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"

namespace einet_binding {
namespace {

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

/// One float parameter of a distribution: the constructor's argument name, which is also the
/// name of the read-only field that keeps it.
template <class Dist>
struct Parameter {
    const char* name;
    double Dist::*field;
};

template <std::size_t>
using AsDouble = double;

/// The binding of a distribution made from float parameters alone. Self (its DistributionBinding)
/// gives `name`, `doc` and `params`, the Parameters in the constructor's order; the constructor,
/// the fields, repr (`Name(a=1.0, b=2.0)`) and the pickled state (the tuple of the parameters)
/// follow from that list.
template <class Dist, class Self>
struct ParameterBinding {
    static void define(py::class_<Dist>& cls) { define(cls, indices()); }
    static std::string repr(const Dist& d) {
        std::string out = std::string(Self::name) + "(";
        for (std::size_t k = 0; k < std::size(Self::params); ++k) {
            out += (k ? ", " : "") + std::string(Self::params[k].name) + "=" + float_repr(d.*Self::params[k].field);
        }
        return out + ")";
    }
    static auto state(const Dist& d) { return state(d, indices()); }
    static Dist from_state(const py::tuple& s) { return from_state(s, indices()); }

private:
    static auto indices() { return std::make_index_sequence<std::size(Self::params)>(); }
    template <std::size_t... I>
    static void define(py::class_<Dist>& cls, std::index_sequence<I...>) {
        cls.def(py::init<AsDouble<I>...>(), py::arg(Self::params[I].name)...);
        for (const Parameter<Dist>& p : Self::params) cls.def_readonly(p.name, p.field);
    }
    template <std::size_t... I>
    static auto state(const Dist& d, std::index_sequence<I...>) {
        return py::make_tuple(d.*Self::params[I].field...);
    }
    template <std::size_t... I>
    static Dist from_state(const py::tuple& s, std::index_sequence<I...>) {
        return Dist(state_number(s, sizeof...(I), I, Self::name)...);
    }
};

/// The base of DistributionBinding<Dist> for a distribution made from its parameters alone.
template <class Dist>
using ParametersOf = ParameterBinding<Dist, DistributionBinding<Dist>>;

template <>
struct DistributionBinding<einet::Uniform> : ParametersOf<einet::Uniform> {
    static constexpr const char* name = "Uniform";
    static constexpr const char* doc = "Exit time uniform on [low, high]: F(t) = (t - low) / (high - low), clamped.";
    static constexpr Parameter<einet::Uniform> params[] = {{"low", &einet::Uniform::low},
                                                           {"high", &einet::Uniform::high}};
};

template <>
struct DistributionBinding<einet::Normal> : ParametersOf<einet::Normal> {
    static constexpr const char* name = "Normal";
    static constexpr const char* doc =
        "Exit time normal(mean, std) truncated to t >= 0 and renormalised. F keeps its "
        "relative precision in both tails (also when nearly all mass lies below 0); "
        "refused when the mass at t >= 0 is below the smallest normal double.";
    static constexpr Parameter<einet::Normal> params[] = {{"mean", &einet::Normal::mean}, {"std", &einet::Normal::std}};
};

template <>
struct DistributionBinding<einet::Exponential> : ParametersOf<einet::Exponential> {
    static constexpr const char* name = "Exponential";
    static constexpr const char* doc = "Exit time exponential: F(t) = 1 - exp(-rate t).";
    static constexpr Parameter<einet::Exponential> params[] = {{"rate", &einet::Exponential::rate}};
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
struct DistributionBinding<einet::Deterministic> : ParametersOf<einet::Deterministic> {
    static constexpr const char* name = "Deterministic";
    static constexpr const char* doc = "A known deadline d: F(t) = 1 if t >= d else 0.";
    static constexpr Parameter<einet::Deterministic> params[] = {{"deadline", &einet::Deterministic::deadline}};
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

}  // namespace

void register_distributions(py::module_& m) {
    bind_distribution<einet::Uniform>(m);
    bind_distribution<einet::Normal>(m);
    bind_distribution<einet::Exponential>(m);
    bind_distribution<einet::Empirical>(m);
    bind_distribution<einet::Deterministic>(m);
}

}  // namespace einet_binding
