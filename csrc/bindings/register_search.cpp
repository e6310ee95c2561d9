// Binds the searches: SearchOptions (how to search), the work caps (MAX_*), search for one
// sample and search_batch for many on threads, both interruptible by Ctrl-C.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common.hpp"

namespace einet_binding {

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

}  // namespace einet_binding
