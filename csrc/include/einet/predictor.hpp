// The confidence-score predictor's forward pass.
//
// The predictor is an MLP trained in torch (einet/predictor.py) and exported as
// dense layers: input = [observed scores (0 where not observed), observation
// mask], ReLU hidden layers, sigmoid output = every exit's score. The online
// step and the per-sample session that use it live in online.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace einet {

struct DenseLayer {
    std::size_t inputs = 0, outputs = 0;
    std::vector<double> weight;  // row-major [outputs, inputs], as torch's nn.Linear stores it
    std::vector<double> bias;    // [outputs]
};

class Predictor {
public:
    /// `calibrated`: the output is each exit's probability of being right (trained on correctness);
    /// otherwise it predicts the confidence itself, and observed exits keep their observed value.
    Predictor(std::vector<DenseLayer> layers, bool calibrated) : layers_(std::move(layers)), calibrated_(calibrated) {
        if (layers_.empty()) throw std::invalid_argument("a predictor needs at least one layer");
        for (std::size_t k = 0; k < layers_.size(); ++k) {
            const DenseLayer& layer = layers_[k];
            if (layer.weight.size() != layer.inputs * layer.outputs || layer.bias.size() != layer.outputs) {
                throw std::invalid_argument("layer " + std::to_string(k) + ": weight/bias sizes do not match " +
                                            std::to_string(layer.outputs) + "x" + std::to_string(layer.inputs));
            }
            if (k > 0 && layer.inputs != layers_[k - 1].outputs) {
                throw std::invalid_argument("layer " + std::to_string(k) + " takes " + std::to_string(layer.inputs) +
                                            " inputs but layer " + std::to_string(k - 1) + " gives " +
                                            std::to_string(layers_[k - 1].outputs));
            }
            for (double w : layer.weight) {
                if (!std::isfinite(w)) throw std::invalid_argument("layer " + std::to_string(k) + " has a non-finite weight");
            }
            for (double b : layer.bias) {
                if (!std::isfinite(b)) throw std::invalid_argument("layer " + std::to_string(k) + " has a non-finite bias");
            }
        }
        if (layers_.front().inputs != 2 * layers_.back().outputs) {
            throw std::invalid_argument("the first layer takes " + std::to_string(layers_.front().inputs) +
                                        " inputs; a predictor of " + std::to_string(layers_.back().outputs) +
                                        " exits takes 2 x that many");
        }
    }

    std::size_t num_exits() const { return layers_.back().outputs; }
    bool calibrated() const { return calibrated_; }
    const std::vector<DenseLayer>& layers() const { return layers_; }

    /// Every exit's score from the observed ones (`observed[j]` counts only where mask[j] is 1).
    void predict(const double* observed, const std::uint8_t* mask, double* scores) const {
        const std::size_t n = num_exits();
        std::vector<double> current(2 * n), next;
        for (std::size_t j = 0; j < n; ++j) {
            current[j] = mask[j] ? observed[j] : 0.0;
            current[n + j] = mask[j] ? 1.0 : 0.0;
        }
        for (std::size_t k = 0; k < layers_.size(); ++k) {
            const DenseLayer& layer = layers_[k];
            next.assign(layer.outputs, 0.0);
            for (std::size_t o = 0; o < layer.outputs; ++o) {
                const double* row = layer.weight.data() + o * layer.inputs;
                double sum = layer.bias[o];
                for (std::size_t i = 0; i < layer.inputs; ++i) sum += row[i] * current[i];
                next[o] = k + 1 < layers_.size() ? std::max(0.0, sum) : 1.0 / (1.0 + std::exp(-sum));
            }
            current.swap(next);
        }
        for (std::size_t j = 0; j < n; ++j) scores[j] = (!calibrated_ && mask[j]) ? observed[j] : current[j];
    }

private:
    std::vector<DenseLayer> layers_;
    bool calibrated_;
};

}  // namespace einet
