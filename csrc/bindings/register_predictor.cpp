// Binds Predictor, the confidence-score predictor's MLP run natively: its constructor from
// weight matrices and bias vectors, num_exits, calibrated and predict().
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "common.hpp"

namespace einet_binding {
namespace {

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

}  // namespace

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

}  // namespace einet_binding
