// The module einet._core: its docstring and version, then each concept's classes and functions,
// bound by register_<concept>.cpp in this order (a class must be bound before the functions
// whose signatures use it). The glue converts, checks shapes and releases the GIL.
// Every argument error surfaces in Python as ValueError (std::invalid_argument), or
// TypeError for an argument of the wrong type. The long searches stay interruptible:
// Ctrl-C (any Python signal handler that raises) ends them within about 0.1 s.
#include "registry.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "einet's native planner: exit-time distributions, the accuracy expectation and the searches.";
#ifdef EINET_VERSION
    m.attr("__version__") = EINET_VERSION;
#else
    m.attr("__version__") = "dev";
#endif
    einet_binding::register_distributions(m);
    einet_binding::register_predictor(m);
    einet_binding::register_search_options(m);
    einet_binding::register_online(m);
    einet_binding::register_objective(m);
    einet_binding::register_search(m);
}
