// A bundle exported for the Python-free program (`einet export-native BUNDLE OUT`, python/einet/native_export.py):
// the export folder read and checked (read_export), and a runtime over it (Runtime) that answers one sample
// at a time under a deadline as `einet run`'s static, threaded runtime does: its loop (loop.hpp) runs the
// sample on a worker thread while the caller waits until the sample ends or its deadline passes, then returns
// the answer held at that instant. What a C++ application links (CMake target einet::native); the program
// cpp/einet_run.cpp is its example. docs/design.md section 8, "Without Python".
//
// The folder: the compiled block and exit packages, the manifest einet-native.txt (its format is in
// native_export.py's docstring: one keyword and its values per line, numbers as hexadecimal floats, names
// escaped) and, for EINet, its session file (session_file.hpp). Anything malformed, missing or of another
// version is a std::invalid_argument naming the file, the line and the value. The runtime does not adapt:
// the ET-profile, the policy and its plans are those the export was made with.
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../session_file.hpp"
#include "loop.hpp"

namespace einet::native {

inline constexpr const char* kExportManifest = "einet-native.txt";
inline constexpr const char* kExportMagic = "einet-native";
inline constexpr const char* kExportVersion = "1";
inline constexpr double kNoDeadline = std::numeric_limits<double>::infinity();

/// One input image: its shape (C, H, W) and per-channel normalisation of pixels in [0, 1].
struct InputSpec {
    std::int64_t channels = 0, height = 0, width = 0;
    std::vector<double> mean, std;

    /// Inputs as the network takes them, contiguous float32 [N, C, H, W]: float32 [N, C, H, W] (normalised
    /// already) as they are; uint8 images [N, H, W, C] normalised as einet.runtime.InputSpec.preprocess does
    /// (the same operations in the same order, so the same floats). std::invalid_argument for anything else,
    /// and for float inputs holding NaN or inf.
    at::Tensor prepare(const at::Tensor& inputs) const {
        const bool images = inputs.scalar_type() == at::kByte;
        const std::vector<std::int64_t> want = images ? std::vector<std::int64_t>{height, width, channels}
                                                      : std::vector<std::int64_t>{channels, height, width};
        if ((!images && inputs.scalar_type() != at::kFloat) || inputs.dim() != 4 || inputs.size(0) < 1 ||
            inputs.sizes().slice(1).vec() != want) {
            throw std::invalid_argument("the inputs must be float32 [N, " + shape(want) + "] (normalised) or uint8 "
                                        "images [N, " + shape({height, width, channels}) + "], got " +
                                        std::string(c10::toString(inputs.scalar_type())) + " " +
                                        shape(inputs.sizes().vec()));
        }
        if (!images) {
            if (!at::isfinite(inputs).all().item<bool>()) {  // (the loop sees only what reaches an exit's scores)
                throw std::invalid_argument("the inputs hold NaN or inf values: no answer could be trusted");
            }
            return inputs.contiguous();
        }
        const at::Tensor x = inputs.permute({0, 3, 1, 2}).to(at::kFloat).div_(255.0);
        return ((x - per_channel(mean)) / per_channel(std)).contiguous();
    }

private:
    at::Tensor per_channel(const std::vector<double>& values) const {  // as torch.tensor(floats): float32
        std::vector<float> floats(values.begin(), values.end());
        return at::tensor(floats).view({1, channels, 1, 1});
    }

    static std::string shape(const std::vector<std::int64_t>& sizes) {
        std::string out;
        for (std::size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
        return out;
    }
};

/// What `einet export-native` wrote, read and checked (paths are the folder's files).
struct Export {
    std::string folder, name, torch_version;
    int threads = 1;
    InputSpec input;
    std::vector<std::string> classes;
    std::vector<std::string> blocks, exits;  // the packages' paths
    std::vector<double> conv, branch;        // the device entry's ET-profile (seconds): what --replay replays
    double horizon_ms = 0.0;
    std::string rule;
    std::vector<double> weights;  // rule ensemble's
    std::int64_t time_zero_class = -1;
    std::vector<std::uint8_t> mask;  // a fixed plan; empty when the policy is EINet's session
    std::string session;             // the session file's path (EINet), or empty

    std::size_t num_exits() const { return blocks.size(); }
};

namespace detail::export_file {

using einet::detail::session_file::shown;

/// One manifest line: its number, keyword, the text after the keyword and its words.
struct Line {
    std::string file;
    std::size_t number = 0;
    std::string keyword, rest;
    std::vector<std::string> values;

    [[noreturn]] void fail(const std::string& what) const {
        throw std::invalid_argument(file + ": line " + std::to_string(number) + " (" + keyword + "): " + what);
    }

    void expect(std::size_t count) const {
        if (values.size() != count) {
            fail("expected " + std::to_string(count) + " value(s), got " + std::to_string(values.size()));
        }
    }

    double real(std::size_t i, double low = -std::numeric_limits<double>::max()) const {
        const std::string& text = values.at(i);
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(value)) {
            fail(shown(text) + " is not a finite number");
        }
        if (value < low) fail(shown(text) + " is below " + std::to_string(low));
        return value;
    }

    std::vector<double> reals(std::size_t count, double low = -std::numeric_limits<double>::max()) const {
        expect(count);
        std::vector<double> out;
        for (std::size_t i = 0; i < count; ++i) out.push_back(real(i, low));
        return out;
    }

    std::int64_t integer(std::size_t i, std::int64_t low, std::int64_t high) const {
        const std::string& text = values.at(i);
        const std::size_t digits = text.size() - (text.rfind('-', 0) == 0 ? 1 : 0);
        char* end = nullptr;
        const long long value = std::strtoll(text.c_str(), &end, 10);
        if (digits == 0 || digits > 18 || end != text.c_str() + text.size() || text[0] == '+' || text[0] == ' ' ||
            value < low || value > high) {
            fail(shown(text) + " is not an integer from " + std::to_string(low) + " to " +
                 std::to_string(high));
        }
        return value;
    }

    /// A name: the rest of the line, unescaped (\\, \n, \r).
    std::string name() const {
        std::string out;
        for (std::size_t i = 0; i < rest.size(); ++i) {
            if (rest[i] != '\\') {
                out += rest[i];
                continue;
            }
            const char next = i + 1 < rest.size() ? rest[++i] : '\0';
            if (next != '\\' && next != 'n' && next != 'r') fail("a lone backslash in " + shown(rest));
            out += next == 'n' ? '\n' : next == 'r' ? '\r' : '\\';
        }
        return out;
    }

    /// Value i as the name of a file in the export folder (no folders, no way out of it); its path.
    std::string file_in(const std::string& folder, std::size_t i) const {
        const std::string& text = values.at(i);
        if (text.empty() || text == "." || text == ".." || text.find('/') != std::string::npos) {
            fail(shown(text) + " is not a file name in the export's folder");
        }
        const std::string path = (std::filesystem::path(folder) / text).string();
        std::error_code error;
        if (!std::filesystem::is_regular_file(path, error)) fail("no such file: " + path);
        return path;
    }
};

/// The manifest's lines, one after another, each with its expected keyword.
class Reader {
public:
    explicit Reader(std::string path) : path_(std::move(path)), in_(path_) {
        if (!in_) throw std::invalid_argument(path_ + ": cannot be read (is this folder an einet export-native?)");
    }

    Line next(const std::string& keyword) {
        std::string text;
        if (!std::getline(in_, text)) {
            throw std::invalid_argument(path_ + ": truncated: it ends after line " + std::to_string(number_) +
                                        ", where '" + keyword + "' was expected");
        }
        Line line{path_, ++number_, {}, {}, {}};
        if (in_.eof() && keyword != "end") line.fail("truncated: the file ends inside this line");
        const std::size_t space = text.find(' ');
        line.keyword = text.substr(0, space);
        line.rest = space == std::string::npos ? "" : text.substr(space + 1);
        std::istringstream words(line.rest);
        for (std::string word; words >> word;) line.values.push_back(std::move(word));
        if (line.keyword != keyword) {
            line.fail("expected '" + keyword + "', got " + shown(line.keyword));
        }
        return line;
    }

    /// After `end`: nothing more.
    void finish() {
        std::string rest;
        while (std::getline(in_, rest)) {
            if (!rest.empty()) {
                throw std::invalid_argument(path_ + ": line " + std::to_string(++number_) + ": text after 'end'");
            }
            ++number_;
        }
    }

private:
    std::string path_;
    std::ifstream in_;
    std::size_t number_ = 0;
};

}  // namespace detail::export_file

/// The export in `folder`, every line and file checked (std::invalid_argument naming the file, line and value).
inline Export read_export(const std::string& folder) {
    using detail::export_file::Line;
    using detail::export_file::shown;
    detail::export_file::Reader reader((std::filesystem::path(folder) / kExportManifest).string());
    Export out;
    out.folder = folder;
    const Line magic = reader.next(kExportMagic);
    magic.expect(1);
    if (magic.values[0] != kExportVersion) {
        magic.fail("version " + shown(magic.values[0]) + " is not supported: this reader "
                   "reads version " + kExportVersion);
    }
    out.name = reader.next("name").name();
    const Line torch = reader.next("torch");
    torch.expect(1);
    out.torch_version = torch.values[0];
    if (out.torch_version != TORCH_VERSION) {
        torch.fail("the packages were compiled with torch " + shown(out.torch_version) +
                   ", this program is built against torch " + TORCH_VERSION +
                   ": export with the torch this program is built against");
    }
    const Line threads = reader.next("threads");
    threads.expect(1);
    out.threads = static_cast<int>(threads.integer(0, 1, 4096));
    const Line input = reader.next("input");
    input.expect(3);
    out.input.channels = input.integer(0, 1, 1 << 16);
    out.input.height = input.integer(1, 1, 1 << 16);
    out.input.width = input.integer(2, 1, 1 << 16);
    const auto channels = static_cast<std::size_t>(out.input.channels);
    out.input.mean = reader.next("mean").reals(channels);
    const Line std_line = reader.next("std");
    out.input.std = std_line.reals(channels);
    for (double s : out.input.std) {
        if (!(s > 0.0)) std_line.fail("every std must be > 0");
    }
    const Line classes = reader.next("classes");
    classes.expect(1);
    const std::int64_t num_classes = classes.integer(0, 1, 1 << 20);
    for (std::int64_t c = 0; c < num_classes; ++c) out.classes.push_back(reader.next("class").name());
    const Line blocks = reader.next("blocks");
    if (blocks.values.empty() || blocks.values.size() > 4096) blocks.fail("expected 1 to 4096 package files");
    const std::size_t n = blocks.values.size();
    for (std::size_t i = 0; i < n; ++i) out.blocks.push_back(blocks.file_in(folder, i));
    const Line exits = reader.next("exits");
    exits.expect(n);
    for (std::size_t i = 0; i < n; ++i) out.exits.push_back(exits.file_in(folder, i));
    out.conv = reader.next("conv").reals(n, 0.0);
    out.branch = reader.next("branch").reals(n, 0.0);
    const Line horizon = reader.next("horizon_ms");
    horizon.expect(1);
    out.horizon_ms = horizon.real(0, 0.0);
    const Line rule = reader.next("rule");
    rule.expect(1);
    out.rule = rule.values[0];
    if (out.rule != "latest" && out.rule != "best" && out.rule != "ensemble") {
        rule.fail("unknown rule " + shown(out.rule) + ": expected latest, best or ensemble");
    }
    out.weights = reader.next("weights").reals(out.rule == "ensemble" ? n : 0, 0.0);
    const Line zero = reader.next("time_zero_class");
    zero.expect(1);
    out.time_zero_class = zero.integer(0, -1, num_classes - 1);
    const Line policy = reader.next("policy");
    if (policy.values.empty() || (policy.values[0] != "mask" && policy.values[0] != "session")) {
        policy.fail("expected 'mask' and one 0 or 1 per exit, or 'session' and its file");
    }
    if (policy.values[0] == "mask") {
        policy.expect(n + 1);
        for (std::size_t i = 0; i < n; ++i) out.mask.push_back(static_cast<std::uint8_t>(policy.integer(i + 1, 0, 1)));
        if (std::find(out.mask.begin(), out.mask.end(), 1) == out.mask.end()) policy.fail("the plan runs no branch");
    } else {
        policy.expect(2);
        out.session = policy.file_in(folder, 1);
    }
    reader.next("end").expect(0);
    reader.finish();
    return out;
}

/// What one sample's inference returns: the held answer (prediction -1: none; exit -1: the time-zero
/// answer or none), whether the deadline stopped it before it ended, and the seconds from the call to the
/// return (replayed: to the replayed end).
struct Answer {
    std::int64_t prediction = -1, exit = -1;
    double confidence = 0.0;
    bool interrupted = false;
    double elapsed = 0.0;
};

/// An export run as `einet run`'s static runtime runs a bundle: one sample at a time, on a worker thread
/// (`threads` intra-op threads) while the caller waits until the sample ends or its deadline passes. Call
/// it from one thread at a time.
class Runtime {
public:
    explicit Runtime(const std::string& folder) : Runtime(read_export(folder)) {}

    explicit Runtime(Export exported)
        : export_(std::move(exported)), session_(read_session_file(export_)), loop_(make_loop(export_)),
          worker_(loop_, export_.threads) {
        policy_.mask = export_.mask;
        if (session_) {
            policy_.session = session_.get();
            policy_.lock = &lock_;
        }
    }

    const Export& exported() const { return export_; }
    Loop& loop() { return loop_; }
    Worker& worker() { return worker_; }
    const Policy& policy() const { return policy_; }

    /// One normalised sample, float32 [1, C, H, W] (InputSpec::prepare makes them), answered by the worker
    /// under `deadline` seconds from this call: the answer held when it ended or when the deadline passed
    /// (an answer published after it does not count). The part then in flight runs on, and a sample called
    /// before it ends waits for it within its own deadline (wait_idle first, as `einet run` does, to start
    /// each sample on an idle device). std::invalid_argument for a wrong input or non-finite scores,
    /// std::runtime_error for a failure in the loop (an earlier sample's: raised by the next call).
    Answer infer(const at::Tensor& x, double deadline = kNoDeadline) {
        check(x, deadline);
        raise_late_failures();
        const double started = steady_seconds();
        const double at = deadline < kNoDeadline ? started + deadline : kNoDeadline;
        auto job = std::make_shared<Job>(std::vector<at::Tensor>{x.contiguous()}, started, 0.0, at, policy_);
        worker_.submit(job);
        const bool done = job->wait_until(at);  // one sleep to the deadline, as einet's native driver waits
        if (!done) job->stop();
        const double elapsed = steady_seconds() - started;
        const Progress progress = job->snapshot();
        if (!progress.done) running_.push_back(job);
        return held(progress, done, deadline, elapsed);
    }

    /// infer() in the caller's thread (with its torch settings) on the export's ET-profile times instead of
    /// the clock: each part advances a virtual clock by its profiled seconds, so that the answers are
    /// deterministic, those of the Python loop replayed on the same times (einet.runtime.replay).
    Answer replay(const at::Tensor& x, double deadline = kNoDeadline) {
        check(x, deadline);
        wait_idle();  // (the worker and this thread share the loop)
        Job job({x.contiguous()}, 0.0, 0.0, deadline, policy_);
        Clock clock;
        clock.conv = &export_.conv;
        clock.branch = &export_.branch;
        loop_.run(job, clock);
        return held(job.progress, true, deadline, job.progress.ended);
    }

    /// Wait until the part an interrupted sample left in flight has ended; raises its failure, if any.
    void wait_idle() {
        worker_.wait_idle(kNoDeadline);
        raise_late_failures();
    }

private:
    static std::unique_ptr<OnlineSession> read_session_file(const Export& exported) {
        if (exported.session.empty()) return nullptr;
        std::ifstream in(exported.session);
        try {
            auto session = std::make_unique<OnlineSession>(read_session(in));
            if (session->conv().size() != exported.num_exits()) {
                throw std::invalid_argument("its session plans " + std::to_string(session->conv().size()) +
                                            " blocks, the network has " + std::to_string(exported.num_exits()));
            }
            return session;
        } catch (const std::invalid_argument& error) {
            throw std::invalid_argument(exported.session + ": " + error.what());
        }
    }

    static Loop make_loop(const Export& exported) {
        RunningAnswer rule(exported.rule, exported.weights, exported.time_zero_class);
        try {
            return Loop(Network(exported.blocks, exported.exits), std::move(rule));
        } catch (const std::exception& error) {
            const std::string what = error.what();
            throw std::invalid_argument(exported.folder + ": its packages cannot be loaded: " +
                                        what.substr(0, what.find('\n')));
        }
    }

    void check(const at::Tensor& x, double deadline) const {
        const InputSpec& in = export_.input;
        if (x.scalar_type() != at::kFloat || x.sizes().vec() != std::vector<std::int64_t>{1, in.channels, in.height,
                                                                                          in.width}) {
            throw std::invalid_argument("the input must be one normalised image, float32 [1, " +
                                        std::to_string(in.channels) + ", " + std::to_string(in.height) + ", " +
                                        std::to_string(in.width) + "]: InputSpec::prepare makes them");
        }
        if (!(deadline >= 0.0)) throw std::invalid_argument("the deadline must be seconds >= 0 (inf for none)");
    }

    /// The failure of a sample the worker ended after its call returned, if any.
    void raise_late_failures() {
        while (!running_.empty() && running_.front()->snapshot().done) {
            const Progress progress = running_.front()->snapshot();
            running_.pop_front();
            raise_if_failed(progress);
        }
    }

    static void raise_if_failed(const Progress& progress) {
        if (progress.non_finite) throw std::invalid_argument(progress.error);
        if (!progress.error.empty()) throw std::runtime_error("the native loop failed: " + progress.error);
    }

    /// The answer held at the deadline or the end (einet.runtime.ElasticRuntime._answer): an answer
    /// published after the deadline does not count.
    Answer held(const Progress& progress, bool done, double deadline, double elapsed) const {
        if (progress.done) raise_if_failed(progress);
        Answer answer;
        answer.interrupted = !(done && !progress.stopped && !(progress.ended > deadline));
        answer.elapsed = elapsed;
        const double cutoff = answer.interrupted ? std::min(elapsed, deadline) : elapsed;
        answer.prediction = export_.time_zero_class;
        for (const Published& published : progress.answers) {
            if (published.finished > cutoff) break;
            answer.prediction = published.prediction;
            answer.exit = published.held_exit;
            answer.confidence = published.confidence;
        }
        return answer;
    }

    Export export_;
    std::unique_ptr<OnlineSession> session_;
    std::mutex lock_;
    Loop loop_;
    Policy policy_;
    std::deque<std::shared_ptr<Job>> running_;  // samples returned while the worker still ran them
    Worker worker_;                   // last: started once the rest is made, stopped first
};

}  // namespace einet::native
