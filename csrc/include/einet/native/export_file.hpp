// A bundle exported for the Python-free program (`einet export-native BUNDLE OUT`, python/einet/native_export.py),
// read and checked: read_export. The folder: the compiled block and exit packages, the manifest einet-native.txt
// (its format is in native_export.py's docstring: one keyword and its values per line, numbers as hexadecimal
// floats, names escaped) and, for EINet, its session file (session_file.hpp). Anything malformed, missing or of
// another version is a std::invalid_argument naming the file, the line and the value. bundle.hpp runs it.
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

}  // namespace einet::native
