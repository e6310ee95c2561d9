// The online step (predict the unobserved scores, then search the remaining blocks) in one
// call, and EINet's per-sample online session built on it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "distributions.hpp"
#include "objective.hpp"
#include "predictor.hpp"
#include "search.hpp"

namespace einet {

struct OnlineStep {
    Plan plan;                   // over blocks start..N-1
    std::vector<double> scores;  // every exit's score, observed or predicted
    double held = 0.0;           // the score credited to the answer already held
};

/// One online step: predict every exit's score from what has been observed, then search the
/// remaining blocks. `held_exit` is the exit whose answer is held: -1 (none, credited
/// `held_default`) or an observed exit in [0, N). `should_stop` as for search().
inline OnlineStep online_step(const Predictor& predictor, Span<double> conv, Span<double> branch, Span<double> observed,
                              Span<std::uint8_t> observed_mask, std::size_t start, double elapsed,
                              std::int64_t held_exit, double held_default, Rule rule, const Distribution& dist,
                              const SearchOptions& options, const StopCheck& should_stop = {}) {
    const std::size_t n = conv.size();
    if (predictor.num_exits() != n) {
        throw std::invalid_argument("the predictor covers " + std::to_string(predictor.num_exits()) +
                                    " exits but the ET-profile has " + std::to_string(n) + " blocks");
    }
    validate_scores(observed, n);
    validate_mask(observed_mask, n);
    if (held_exit < -1 || held_exit >= static_cast<std::int64_t>(n)) {
        throw std::invalid_argument("held_exit=" + std::to_string(held_exit) + " must be -1 or an exit in [0, " +
                                    std::to_string(n) + ")");
    }
    if (held_exit >= 0 && !observed_mask[static_cast<std::size_t>(held_exit)]) {
        throw std::invalid_argument("held_exit=" + std::to_string(held_exit) + " must be -1 or an observed exit");
    }
    OnlineStep step;
    step.scores.resize(n);
    predictor.predict(observed.ptr, observed_mask.ptr, step.scores.data());
    step.held = held_exit >= 0 ? step.scores[static_cast<std::size_t>(held_exit)] : held_default;
    const Instance in{conv, branch, {step.scores.data(), n}, start, elapsed, step.held, rule};
    step.plan = search(in, dist, options, should_stop);
    return step;
}

/// EINet's online loop for one sample after another, held natively so that each step from
/// Python is one call with three numbers: the runtime calls it between blocks, where every
/// microsecond is inference time. Semantics as einet.policies.EINet: after each observed
/// branch, predict and re-plan the remaining blocks; keep the current plan unless the new
/// one beats it by more than `margin` under the same predicted scores.
class OnlineSession {
public:
    OnlineSession(Predictor predictor, std::vector<double> conv, std::vector<double> branch, Distribution dist,
                  Rule rule, SearchOptions options, std::vector<std::uint8_t> first_plan, double margin)
        : predictor_(std::move(predictor)), conv_(std::move(conv)), branch_(std::move(branch)),
          dist_(std::move(dist)), rule_(rule), options_(options), first_plan_(std::move(first_plan)),
          margin_(margin) {
        validate_profile({conv_.data(), conv_.size()}, {branch_.data(), branch_.size()});
        validate(options_, conv_.size(), detail::cdf_cost(dist_));
        if (predictor_.num_exits() != conv_.size()) {
            throw std::invalid_argument("the predictor covers " + std::to_string(predictor_.num_exits()) +
                                        " exits but the ET-profile has " + std::to_string(conv_.size()) + " blocks");
        }
        validate_mask({first_plan_.data(), first_plan_.size()}, conv_.size());
        if (!(margin_ >= 0.0)) throw std::invalid_argument("margin must be >= 0, got " + std::to_string(margin_));
        begin();
    }

    void begin() {
        observed_.assign(conv_.size(), 0.0);
        seen_.assign(conv_.size(), 0);
        plan_ = first_plan_;
        plan_start_ = 0;
        held_exit_ = -1;
        best_confidence_ = -1.0;
    }

    // What the session was made from (what session_file.hpp writes).
    const Predictor& predictor() const { return predictor_; }
    const std::vector<double>& conv() const { return conv_; }
    const std::vector<double>& branch() const { return branch_; }
    const Distribution& distribution() const { return dist_; }
    Rule rule() const { return rule_; }
    const SearchOptions& options() const { return options_; }
    const std::vector<std::uint8_t>& first_plan() const { return first_plan_; }
    double margin() const { return margin_; }

    bool run_branch(std::size_t block) const {
        return block >= plan_start_ && block - plan_start_ < plan_.size() && plan_[block - plan_start_];
    }

    void observe(std::size_t block, double confidence, double elapsed) {
        const std::size_t n = conv_.size();
        if (block >= n) throw std::invalid_argument("block=" + std::to_string(block) + " is outside the model");
        if (!(confidence >= 0.0 && confidence <= 1.0)) {
            throw std::invalid_argument("confidence must be in [0, 1], got " + std::to_string(confidence));
        }
        observed_[block] = confidence;
        seen_[block] = 1;
        if (rule_ == Rule::latest || confidence > best_confidence_) {
            held_exit_ = static_cast<std::int64_t>(block);
            best_confidence_ = std::max(confidence, best_confidence_);
        }
        if (block + 1 >= n) return;
        const std::size_t start = block + 1;
        OnlineStep step = online_step(predictor_, {conv_.data(), n}, {branch_.data(), n}, {observed_.data(), n},
                                      {seen_.data(), n}, start, elapsed, held_exit_, 0.0, rule_, dist_, options_);
        if (margin_ > 0.0) {  // keep the current plan unless the new one is clearly better
            std::vector<std::uint8_t> current(n - start);
            for (std::size_t b = start; b < n; ++b) current[b - start] = run_branch(b) ? 1 : 0;
            const Instance in{{conv_.data(), n}, {branch_.data(), n}, {step.scores.data(), n}, start, elapsed,
                              step.held, rule_};
            const double kept =
                std::visit([&](const auto& d) { return detail::expected_accuracy(in, d, current.data()); }, dist_);
            if (step.plan.value <= kept + margin_) step.plan.mask = std::move(current);
        }
        plan_ = std::move(step.plan.mask);
        plan_start_ = start;
    }

private:
    Predictor predictor_;
    std::vector<double> conv_, branch_;
    Distribution dist_;
    Rule rule_;
    SearchOptions options_;
    std::vector<std::uint8_t> first_plan_;
    double margin_;
    std::vector<double> observed_;
    std::vector<std::uint8_t> seen_;
    std::vector<std::uint8_t> plan_;
    std::size_t plan_start_ = 0;
    std::int64_t held_exit_ = -1;
    double best_confidence_ = -1.0;
};

}  // namespace einet
