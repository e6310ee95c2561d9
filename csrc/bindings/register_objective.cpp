// Binds the accuracy expectation E(x): TIE_TOLERANCE and expected_accuracy, for one plan or
// for many plans in one call (the GIL released while they are evaluated).
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "common.hpp"

namespace einet_binding {

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

}  // namespace einet_binding
