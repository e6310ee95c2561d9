// Private to the bindings, shared by every register_<concept>.cpp: the type casters that refuse
// einet objects made by __new__ alone, the checks and conversions of array arguments, and the
// interruptible release of the GIL around the long searches. Everything here is inline or a
// template, so each translation unit may include it (one definition per program).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <typeinfo>
#include <vector>

#include "einet/distributions.hpp"
#include "einet/objective.hpp"
#include "einet/predictor.hpp"
#include "einet/search.hpp"
#include "registry.hpp"

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

/// The caster of an einet type T: pybind11's own, after refusing an unconstructed object.
/// Specialise pybind11::detail::type_caster<T> as this before any code that casts a T (the
/// distributions and Predictor below; OnlineSession's session in register_online.cpp).
template <class T>
class ConstructedCaster : public py::detail::type_caster_base<T> {
public:
    bool load(py::handle src, bool convert) {
        if (unconstructed(src, typeid(T))) {
            throw py::value_error(std::string(py::str(py::type::of(src).attr("__name__"))) +
                                  " object was never initialised (made by __new__ without __init__)");
        }
        return py::detail::type_caster_base<T>::load(src, convert);
    }
};
}  // namespace einet_binding

namespace pybind11 {
namespace detail {
template <> class type_caster<einet::Uniform> : public einet_binding::ConstructedCaster<einet::Uniform> {};
template <> class type_caster<einet::Normal> : public einet_binding::ConstructedCaster<einet::Normal> {};
template <> class type_caster<einet::Exponential> : public einet_binding::ConstructedCaster<einet::Exponential> {};
template <> class type_caster<einet::Empirical> : public einet_binding::ConstructedCaster<einet::Empirical> {};
template <> class type_caster<einet::Deterministic> : public einet_binding::ConstructedCaster<einet::Deterministic> {};
template <> class type_caster<einet::Predictor> : public einet_binding::ConstructedCaster<einet::Predictor> {};
}  // namespace detail
}  // namespace pybind11

namespace einet_binding {

using Doubles = py::array_t<double, py::array::c_style | py::array::forcecast>;

inline std::string shape_of(const py::array& a) {
    std::ostringstream out;
    out << "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) out << (d ? ", " : "") << a.shape(d);
    out << (a.ndim() == 1 ? ",)" : ")");
    return out.str();
}

inline einet::Span<double> vector_of(const Doubles& a, const char* name) {
    if (a.ndim() != 1) {
        throw std::invalid_argument(std::string(name) + " must be 1-D, got shape " + shape_of(a));
    }
    return {a.data(), static_cast<std::size_t>(a.shape(0))};
}

/// Plans arrive as bool (viewed as bytes, zero-copy) or integer arrays holding only 0 and 1;
/// anything else would be silently truncated by a cast, so it is refused.
inline py::array_t<std::uint8_t, py::array::c_style> plan_bytes(const py::array& mask) {
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

inline einet::Instance make_instance(const Doubles& scores, const Doubles& conv, const Doubles& branch,
                                     std::size_t start, double elapsed, double held, const std::string& rule) {
    return einet::Instance{vector_of(conv, "conv"),    vector_of(branch, "branch"), vector_of(scores, "scores"),
                           start, elapsed, held, einet::parse_rule(rule)};
}

/// The native distribution behind a Python one (a copy: O(1) for every type).
inline einet::Distribution to_distribution(const py::handle& dist) {
    if (py::isinstance<einet::Uniform>(dist)) return dist.cast<einet::Uniform>();
    if (py::isinstance<einet::Normal>(dist)) return dist.cast<einet::Normal>();
    if (py::isinstance<einet::Exponential>(dist)) return dist.cast<einet::Exponential>();
    if (py::isinstance<einet::Empirical>(dist)) return dist.cast<einet::Empirical>();
    if (py::isinstance<einet::Deterministic>(dist)) return dist.cast<einet::Deterministic>();
    throw py::type_error("dist must be an einet distribution (Uniform, Normal, Exponential, Empirical, "
                         "Deterministic), got " + std::string(py::str(py::type::of(dist).attr("__name__"))));
}

inline py::array_t<bool> as_bool_array(const std::vector<std::uint8_t>& mask) {
    py::array_t<bool> out(static_cast<py::ssize_t>(mask.size()));
    std::copy(mask.begin(), mask.end(), out.mutable_data());
    return out;
}

inline py::array_t<std::uint8_t, py::array::c_style> observation_mask(const py::array& mask, std::size_t n) {
    auto bytes = plan_bytes(mask);
    if (bytes.ndim() != 1 || static_cast<std::size_t>(bytes.shape(0)) != n) {
        throw std::invalid_argument("the observation mask must have shape (" + std::to_string(n) + ",), got " +
                                    shape_of(bytes));
    }
    return bytes;
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

}  // namespace einet_binding
