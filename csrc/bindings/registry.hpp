// The register functions of einet._core, one per concept (register_<concept>.cpp), each
// adding its classes, functions and constants to the module; module.cpp calls them in order.
#pragma once

#include <pybind11/pybind11.h>

namespace einet_binding {
void register_distributions(pybind11::module_& m);   // Uniform, Normal, Exponential, Empirical, Deterministic
void register_predictor(pybind11::module_& m);       // Predictor
void register_search_options(pybind11::module_& m);  // SearchOptions (register_search.cpp)
void register_online(pybind11::module_& m);          // OnlineSession, online_step
void register_objective(pybind11::module_& m);       // TIE_TOLERANCE, expected_accuracy
void register_search(pybind11::module_& m);          // the MAX_* caps, search, search_batch
}  // namespace einet_binding
