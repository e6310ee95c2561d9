// einet-run: a bundle exported by `einet export-native` answering images or tensors under deadlines, without
// Python (docs/design.md section 8, "Without Python"). The documented example of the CMake target einet::native.
//
//   einet-run EXPORT_DIR INPUTS.pt [--deadline-ms X | --deadlines FILE] [--replay] [--warmup N]
//   einet-run EXPORT_DIR INPUTS.pt --measure N
//
// INPUTS.pt: one tensor saved by Python's torch.save: float32 [N, C, H, W], normalised already, or uint8
// images [N, H, W, C], normalised here as the bundle says. Each sample is answered as `einet run`'s static
// runtime answers it: on the loop's worker thread, the caller waiting until the sample ends or its deadline
// passes (--deadline-ms: one for all, --deadlines: a file of one per line, in ms; neither: none), one line
// each: index, prediction (-1: none), exit (-1: none), confidence, interrupted (0/1), elapsed ms.
// --replay: the export's ET-profile times instead of the clock (deterministic answers, those of the Python
// loop replayed on the same times). --measure N: N inferences of the loop in this thread (every branch, no
// deadline) alternated with N direct chains of the same packages, then N on the worker (the hand-over and
// wake-ups included); the median cost per inference of each.
// Exit status 0; a bad option, input or export: one line on stderr and 2; a failure while running: 1.
#include <torch/csrc/jit/serialization/pickle.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "einet/native/bundle.hpp"

namespace {

using namespace einet::native;

constexpr const char* kUsage =
    "usage: einet-run EXPORT_DIR INPUTS.pt [--deadline-ms X | --deadlines FILE] [--replay] [--warmup N] "
    "[--measure N]";

struct Options {
    std::string folder, inputs, deadlines_file;
    double deadline_ms = kNoDeadline;
    bool replay = false;
    int warmup = 10, measure = 0;
};

double number(const std::string& option, const std::string& text, double low, double high) {
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (text.empty() || end != text.c_str() + text.size() || !(value >= low && value <= high)) {
        throw std::invalid_argument(option + " takes a number from " + std::to_string(low) + " to " +
                                    std::to_string(high) + ", got '" + text + "'");
    }
    return value;
}

Options parse(int argc, char** argv) {
    Options options;
    std::vector<std::string> positional;
    bool deadline_given = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
            return argv[++i];
        };
        if (arg == "--deadline-ms" || arg == "--deadlines") {
            if (deadline_given) throw std::invalid_argument("give --deadline-ms or --deadlines, once");
            deadline_given = true;
            if (arg == "--deadlines") options.deadlines_file = value();
            else options.deadline_ms = number(arg, value(), 0.0, 1e12);
        } else if (arg == "--replay") {
            options.replay = true;
        } else if (arg == "--warmup") {
            options.warmup = static_cast<int>(number(arg, value(), 0, 1e6));
        } else if (arg == "--measure") {
            options.measure = static_cast<int>(number(arg, value(), 1, 1e6));
        } else if (arg.rfind("-", 0) == 0 && arg != "-") {
            throw std::invalid_argument("unknown option " + arg);
        } else {
            positional.push_back(arg);
        }
    }
    if (positional.size() != 2) throw std::invalid_argument("give EXPORT_DIR and INPUTS.pt");
    if (options.measure && (deadline_given || options.replay)) {
        throw std::invalid_argument("--measure runs without deadlines, on the clock");
    }
    options.folder = positional[0];
    options.inputs = positional[1];
    return options;
}

/// The tensor a torch.save wrote to `path`.
at::Tensor load_tensor(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::invalid_argument(path + ": cannot be read");
    const std::vector<char> data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    c10::IValue value;
    try {
        value = torch::jit::pickle_load(data);
    } catch (const std::exception&) {
        throw std::invalid_argument(path + ": not a tensor saved by torch.save");
    }
    if (!value.isTensor()) throw std::invalid_argument(path + ": holds a " + value.tagKind() + ", not one tensor");
    return value.toTensor();
}

/// Each sample's deadline in seconds (kNoDeadline: none).
std::vector<double> deadlines(const Options& options, std::int64_t samples) {
    if (options.deadlines_file.empty()) return std::vector<double>(samples, options.deadline_ms * 1e-3);
    std::ifstream in(options.deadlines_file);
    if (!in) throw std::invalid_argument(options.deadlines_file + ": cannot be read");
    std::vector<double> out;
    for (std::string line; std::getline(in, line);) {
        if (line.empty()) continue;
        out.push_back(number(options.deadlines_file + " line " + std::to_string(out.size() + 1), line, 0.0, 1e12) *
                      1e-3);
    }
    if (static_cast<std::int64_t>(out.size()) != samples) {
        throw std::invalid_argument(options.deadlines_file + " holds " + std::to_string(out.size()) +
                                    " deadlines for " + std::to_string(samples) + " inputs: give one per input");
    }
    return out;
}

double median(std::vector<double> values) {
    std::sort(values.begin(), values.end());
    const std::size_t n = values.size();
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

/// The loop's cost per inference beside a direct chain of the same packages (Loop::direct_chain), every branch,
/// no deadline: the loop in this thread alternated with the chain, then the loop on the worker (its hand-over
/// and both threads' wake-ups included; alternated with the chain, the chain would run on caches the worker's
/// core had warmed).
void measure(Runtime& runtime, const at::Tensor& x, int n) {
    Loop& loop = runtime.loop();
    Policy every;
    every.mask.assign(loop.num_exits(), 1);
    Clock clock;
    const auto here = [&] {
        const double started = steady_seconds();
        Job job({x}, started, 0.0, kNoDeadline, every);
        loop.run(job, clock);
        if (!job.progress.error.empty()) throw std::runtime_error(job.progress.error);
        return steady_seconds() - started;
    };
    const auto on_worker = [&] {
        const double started = steady_seconds();
        auto job = std::make_shared<Job>(std::vector<at::Tensor>{x}, started, 0.0, kNoDeadline, every);
        runtime.worker().submit(job);
        job->wait_for(kNoDeadline);
        const double seconds = steady_seconds() - started;
        if (!job->snapshot().error.empty()) throw std::runtime_error(job->snapshot().error);
        runtime.worker().wait_idle(kNoDeadline);  // (its thread out of the loop before this one runs it)
        return seconds;
    };
    std::vector<double> direct, inline_loop, worker_loop;
    for (int i = 0; i < std::min(n, 20); ++i) {  // warm-up
        here();
        on_worker();
        loop.direct_chain({x});
    }
    for (int i = 0; i < n; ++i) {  // the loop and the chain alternated, each after the other in this thread
        direct.push_back(loop.direct_chain({x}));
        inline_loop.push_back(here());
    }
    for (int i = 0; i < n; ++i) worker_loop.push_back(on_worker());
    const double chain = 1e6 * median(direct), mine = 1e6 * median(inline_loop), worker = 1e6 * median(worker_loop);
    std::printf("measure: %d inferences each, every branch, no deadline; median us per inference\n", n);
    std::printf("direct chain %.1f\n", chain);
    std::printf("loop %.1f (%+.1f)\n", mine, mine - chain);
    std::printf("loop on the worker %.1f (%+.1f)\n", worker, worker - chain);
}

int run(const Options& options) {
    Runtime runtime(options.folder);
    at::set_num_threads(runtime.exported().threads);  // this thread's (--replay, --measure); the worker sets its own
    const at::Tensor x = runtime.exported().input.prepare(load_tensor(options.inputs));
    if (options.measure) {
        measure(runtime, x.narrow(0, 0, 1), options.measure);
        return 0;
    }
    const std::vector<double> limits = deadlines(options, x.size(0));
    for (int i = 0; i < options.warmup && !options.replay; ++i) runtime.infer(x.narrow(0, 0, 1));
    std::printf("# index prediction exit confidence interrupted elapsed_ms\n");
    for (std::int64_t k = 0; k < x.size(0); ++k) {
        const at::Tensor sample = x.narrow(0, k, 1);
        runtime.wait_idle();  // each sample on an idle device, as `einet run` starts them (and the simulator)
        const Answer a = options.replay ? runtime.replay(sample, limits[k]) : runtime.infer(sample, limits[k]);
        std::printf("%lld %lld %lld %.6f %d %.3f\n", static_cast<long long>(k), static_cast<long long>(a.prediction),
                    static_cast<long long>(a.exit), a.confidence, a.interrupted ? 1 : 0, 1e3 * a.elapsed);
    }
    return 0;
}

/// An error in one line (a torch error's first line, without its backtrace).
int fail(const std::exception& error, int status) {
    const std::string what = error.what();
    std::fprintf(stderr, "einet-run: error: %s\n", what.substr(0, what.find('\n')).c_str());
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
        std::printf("%s\n", kUsage);
        return 0;
    }
    Options options;
    try {
        options = parse(argc, argv);
    } catch (const std::invalid_argument& error) {
        std::fprintf(stderr, "einet-run: error: %s; %s\n", error.what(), kUsage);
        return 2;
    }
    try {
        return run(options);
    } catch (const std::invalid_argument& error) {
        return fail(error, 2);
    } catch (const std::exception& error) {
        return fail(error, 1);
    }
}
