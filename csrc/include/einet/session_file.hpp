// An OnlineSession written and read as text, so that a program without Python can rebuild EINet's
// per-sample planner (docs/design.md section 8, the session file).
//
// The file holds what the session is made from, not a sample in progress: a session read back
// stands where a new one does, at begin(). One keyword and its values per line, in this order:
//
//   einet-online-session 1            magic and version
//   blocks <N>                        the ET-profile: N blocks
//   conv <N numbers>
//   branch <N numbers>
//   calibrated <0|1>                  the predictor
//   layers <L>                        L dense layers, each the three lines below
//   layer <inputs> <outputs>
//   weight <inputs x outputs numbers> row-major [outputs, inputs], as DenseLayer holds it
//   bias <outputs numbers>
//   distribution uniform <low> <high> | normal <mean> <std> | exponential <rate> |
//                deterministic <deadline> | empirical <K>, then the line: samples <K numbers>
//   rule latest|best
//   method exhaustive|greedy|hybrid|random
//   depth <d>
//   budget <b>
//   seed <s>
//   first_plan <N values, 0 or 1>
//   margin <number>
//   end
//
// Numbers are written as C99 hexadecimal floats (std::hexfloat, e.g. 0x1.8p-1): the digits are the
// double's own bits, so every value round-trips exactly, with no decimal rounding on either side
// (17 significant decimal digits would round-trip too, but only through a correctly rounded
// reader). They are read with strtod, so a decimal number is accepted as well; strtod follows the
// C locale's decimal point (LC_NUMERIC, "C" unless the program changes it). Counts and integers are
// unsigned decimal. Every line ends with a newline (`end` may lack it), so a file cut anywhere is
// refused as truncated. read_session checks every line and throws std::invalid_argument naming the line,
// its keyword and the bad value; the semantic checks are the constructors' own. It reads through
// the line `end` and no further, so a session may be followed by other text in the same stream.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <istream>
#include <limits>
#include <locale>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "distributions.hpp"
#include "objective.hpp"
#include "online.hpp"
#include "predictor.hpp"
#include "search.hpp"

namespace einet {

inline constexpr const char* kSessionFileMagic = "einet-online-session";
inline constexpr const char* kSessionFileVersion = "1";

namespace detail::session_file {

// ---- writing -------------------------------------------------------------------------------

inline std::string number(double value) {
    std::ostringstream out;
    out.imbue(std::locale::classic());  // a '.' whatever locale the caller's stream has
    out << std::hexfloat << value;
    return out.str();
}

// Integers go through std::to_string, never the stream: a stream's locale may group digits.
inline void write_numbers(std::ostream& out, const char* keyword, const std::vector<double>& values) {
    out << keyword;
    for (double value : values) out << ' ' << number(value);
    out << '\n';
}

inline void write_profile(std::ostream& out, const std::vector<double>& conv, const std::vector<double>& branch) {
    out << "blocks " << std::to_string(conv.size()) << '\n';
    write_numbers(out, "conv", conv);
    write_numbers(out, "branch", branch);
}

inline void write_predictor(std::ostream& out, const Predictor& predictor) {
    out << "calibrated " << (predictor.calibrated() ? "1" : "0") << '\n';
    out << "layers " << std::to_string(predictor.layers().size()) << '\n';
    for (const DenseLayer& layer : predictor.layers()) {
        out << "layer " << std::to_string(layer.inputs) << ' ' << std::to_string(layer.outputs) << '\n';
        write_numbers(out, "weight", layer.weight);
        write_numbers(out, "bias", layer.bias);
    }
}

template <class>
inline constexpr bool kNoFileForm = false;

inline void write_distribution(std::ostream& out, const Distribution& dist) {
    std::visit(
        [&](const auto& d) {
            using D = std::decay_t<decltype(d)>;
            out << "distribution ";
            if constexpr (std::is_same_v<D, Uniform>) {
                out << "uniform " << number(d.low) << ' ' << number(d.high) << '\n';
            } else if constexpr (std::is_same_v<D, Normal>) {
                out << "normal " << number(d.mean) << ' ' << number(d.std) << '\n';
            } else if constexpr (std::is_same_v<D, Exponential>) {
                out << "exponential " << number(d.rate) << '\n';
            } else if constexpr (std::is_same_v<D, Deterministic>) {
                out << "deterministic " << number(d.deadline) << '\n';
            } else if constexpr (std::is_same_v<D, Empirical>) {
                out << "empirical " << std::to_string(d.sorted->size()) << '\n';
                write_numbers(out, "samples", *d.sorted);
            } else {
                static_assert(kNoFileForm<D>, "a distribution without a session-file form");
            }
        },
        dist);
}

inline const char* rule_name(Rule rule) { return rule == Rule::latest ? "latest" : "best"; }

inline void write_rule(std::ostream& out, Rule rule) { out << "rule " << rule_name(rule) << '\n'; }

inline void write_options(std::ostream& out, const SearchOptions& options) {
    out << "method " << method_name(options.method) << '\n';
    out << "depth " << std::to_string(options.depth) << '\n';
    out << "budget " << std::to_string(options.budget) << '\n';
    out << "seed " << std::to_string(options.seed) << '\n';
}

inline void write_plan(std::ostream& out, const std::vector<std::uint8_t>& first_plan, double margin) {
    out << "first_plan";
    for (std::uint8_t run : first_plan) out << (run ? " 1" : " 0");
    out << '\n' << "margin " << number(margin) << '\n';
}

// ---- reading -------------------------------------------------------------------------------

/// A value as an error message shows it: quoted, at most 40 bytes, odd bytes as \xNN.
inline std::string shown(const std::string& value) {
    static const char* const hex = "0123456789abcdef";
    std::string out = "'";
    for (std::size_t i = 0; i < value.size() && i < 40; ++i) {
        const auto byte = static_cast<unsigned char>(value[i]);
        if (byte >= 0x20 && byte < 0x7f) {
            out += static_cast<char>(byte);
        } else {
            out += "\\x";
            out += hex[byte >> 4];
            out += hex[byte & 0xf];
        }
    }
    return out + (value.size() > 40 ? "...'" : "'");
}

[[noreturn]] inline void refuse(const std::string& what) {
    throw std::invalid_argument("einet session file: " + what);
}

/// One line: its number, keyword and values. Every failure names them.
struct Line {
    std::size_t number = 0;
    std::string keyword;
    std::vector<std::string> values;

    [[noreturn]] void fail(const std::string& what) const {
        refuse("line " + std::to_string(number) + " (" + keyword + "): " + what);
    }

    void expect_values(std::size_t count) const {
        if (values.size() != count) {
            fail("expected " + std::to_string(count) + " value(s), got " + std::to_string(values.size()));
        }
    }

    /// Value i as a finite double.
    double real(std::size_t i) const {
        const std::string& text = values[i];
        char* end = nullptr;
        const double value = std::strtod(text.c_str(), &end);
        if (end != text.c_str() + text.size() || !std::isfinite(value)) fail(shown(text) + " is not a finite number");
        return value;
    }

    /// All `count` values as finite doubles.
    std::vector<double> reals(std::size_t count) const {
        expect_values(count);
        std::vector<double> out;
        out.reserve(count);
        for (std::size_t i = 0; i < count; ++i) out.push_back(real(i));
        return out;
    }

    /// Value i as an unsigned decimal integer of type T, at most `most`.
    template <class T>
    T integer(std::size_t i, T most = std::numeric_limits<T>::max()) const {
        const std::string& text = values[i];
        if (text.empty() || text.size() > 20) fail(shown(text) + " is not an unsigned integer");
        std::uint64_t value = 0;
        for (char c : text) {
            if (c < '0' || c > '9') fail(shown(text) + " is not an unsigned integer");
            const auto digit = static_cast<std::uint64_t>(c - '0');
            if (value > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) fail(shown(text) + " is too large");
            value = value * 10 + digit;
        }
        if (value > static_cast<std::uint64_t>(most)) {
            fail(shown(text) + " is out of range: at most " + std::to_string(most));
        }
        return static_cast<T>(value);
    }

    /// The line's single value as an integer.
    template <class T>
    T only_integer(T most = std::numeric_limits<T>::max()) const {
        expect_values(1);
        return integer<T>(0, most);
    }
};

/// The file's lines, one after another.
class Reader {
public:
    explicit Reader(std::istream& in) : in_(in) {}

    /// The next line, whatever its keyword.
    Line next_any(const std::string& expected) {
        std::string text;
        if (!std::getline(in_, text)) {
            refuse("truncated: it ends after line " + std::to_string(number_) + ", where '" + expected +
                   "' was expected");
        }
        if (in_.eof() && expected != "end") {  // every line but the last ends with a newline
            refuse("truncated: it ends inside line " + std::to_string(number_ + 1) + ", " + shown(text) +
                   ", where '" + expected + "' was expected");
        }
        std::istringstream words(text);
        words.imbue(std::locale::classic());
        Line line{++number_, {}, {}};
        words >> line.keyword;
        for (std::string word; words >> word;) line.values.push_back(std::move(word));
        return line;
    }

    /// The next line, which must have `keyword`.
    Line next(const std::string& keyword) {
        Line line = next_any(keyword);
        if (line.keyword != keyword) {
            refuse("line " + std::to_string(line.number) + ": expected '" + keyword + "', got " + shown(line.keyword));
        }
        return line;
    }

private:
    std::istream& in_;
    std::size_t number_ = 0;
};

/// `make()`, its std::invalid_argument (a constructor's check) prefixed with the line it concerns.
template <class Make>
auto checked(const Line& line, Make make) {
    try {
        return make();
    } catch (const std::invalid_argument& error) {
        line.fail(error.what());
    }
}

inline void read_header(Reader& reader) {
    const Line line = reader.next_any(kSessionFileMagic);
    if (line.keyword != kSessionFileMagic) {
        refuse("line 1 starts with " + shown(line.keyword) + ", not '" + kSessionFileMagic +
               "': not a session file");
    }
    line.expect_values(1);
    if (line.values[0] != kSessionFileVersion) {
        line.fail("version " + shown(line.values[0]) + " is not supported: this reader reads version " +
                  kSessionFileVersion);
    }
}

struct Profile {
    std::vector<double> conv, branch;
};

inline Profile read_profile(Reader& reader) {
    const auto blocks = reader.next("blocks").only_integer<std::size_t>();
    Profile profile;
    profile.conv = reader.next("conv").reals(blocks);
    profile.branch = reader.next("branch").reals(blocks);
    return profile;
}

inline Predictor read_predictor(Reader& reader) {
    const bool calibrated = reader.next("calibrated").only_integer<unsigned>(1) == 1;
    const Line count = reader.next("layers");
    const auto num_layers = count.only_integer<std::size_t>();
    std::vector<DenseLayer> layers;
    for (std::size_t k = 0; k < num_layers; ++k) {
        const Line shape = reader.next("layer");
        shape.expect_values(2);
        DenseLayer layer;
        layer.inputs = shape.integer<std::size_t>(0);
        layer.outputs = shape.integer<std::size_t>(1);
        if (layer.outputs != 0 && layer.inputs > std::numeric_limits<std::size_t>::max() / layer.outputs) {
            shape.fail("a layer of " + std::to_string(layer.outputs) + " x " + std::to_string(layer.inputs) +
                       " weights is too large");
        }
        layer.weight = reader.next("weight").reals(layer.inputs * layer.outputs);
        layer.bias = reader.next("bias").reals(layer.outputs);
        layers.push_back(std::move(layer));
    }
    return checked(count, [&] { return Predictor(std::move(layers), calibrated); });
}

inline Distribution read_distribution(Reader& reader) {
    const Line line = reader.next("distribution");
    if (line.values.empty()) line.fail("expected a distribution's name");
    const std::string& kind = line.values[0];
    const auto parameters = [&](std::size_t count) {
        line.expect_values(1 + count);
        std::vector<double> out;
        for (std::size_t i = 1; i <= count; ++i) out.push_back(line.real(i));
        return out;
    };
    if (kind == "uniform") {
        const auto p = parameters(2);
        return checked(line, [&] { return Uniform(p[0], p[1]); });
    }
    if (kind == "normal") {
        const auto p = parameters(2);
        return checked(line, [&] { return Normal(p[0], p[1]); });
    }
    if (kind == "exponential") {
        const auto p = parameters(1);
        return checked(line, [&] { return Exponential(p[0]); });
    }
    if (kind == "deterministic") {
        const auto p = parameters(1);
        return checked(line, [&] { return Deterministic(p[0]); });
    }
    if (kind == "empirical") {
        line.expect_values(2);
        const auto count = line.integer<std::size_t>(1);
        const Line samples = reader.next("samples");
        std::vector<double> values = samples.reals(count);
        return checked(samples, [&] { return Empirical(std::move(values)); });
    }
    line.fail("unknown distribution " + shown(kind) +
              ": expected uniform, normal, exponential, deterministic or empirical");
}

// The names are the writer's own (rule_name, method_name), so what it writes is what is read.
inline Rule read_rule(Reader& reader) {
    const Line line = reader.next("rule");
    line.expect_values(1);
    for (Rule rule : {Rule::latest, Rule::best}) {
        if (line.values[0] == rule_name(rule)) return rule;
    }
    line.fail("unknown rule " + shown(line.values[0]) + ": expected latest or best");
}

inline SearchOptions read_options(Reader& reader) {
    const Line line = reader.next("method");
    line.expect_values(1);
    SearchOptions options;
    bool known = false;
    for (Method method : {Method::exhaustive, Method::greedy, Method::hybrid, Method::random}) {
        if (line.values[0] == method_name(method)) {
            options.method = method;
            known = true;
        }
    }
    if (!known) {
        line.fail("unknown method " + shown(line.values[0]) + ": expected exhaustive, greedy, hybrid or random");
    }
    options.depth = reader.next("depth").only_integer<std::size_t>();
    options.budget = reader.next("budget").only_integer<std::uint64_t>();
    options.seed = reader.next("seed").only_integer<std::uint64_t>();
    return options;
}

inline std::vector<std::uint8_t> read_first_plan(Reader& reader, std::size_t blocks) {
    const Line line = reader.next("first_plan");
    line.expect_values(blocks);
    std::vector<std::uint8_t> plan;
    for (std::size_t i = 0; i < blocks; ++i) plan.push_back(line.integer<std::uint8_t>(i, 1));
    return plan;
}

}  // namespace detail::session_file

/// Writes everything `session` was made from (see the format above).
inline void write_session(std::ostream& out, const OnlineSession& session) {
    using namespace detail::session_file;
    out << kSessionFileMagic << ' ' << kSessionFileVersion << '\n';
    write_profile(out, session.conv(), session.branch());
    write_predictor(out, session.predictor());
    write_distribution(out, session.distribution());
    write_rule(out, session.rule());
    write_options(out, session.options());
    write_plan(out, session.first_plan(), session.margin());
    out << "end\n";
}

/// The session a write_session wrote, at begin(). Throws std::invalid_argument naming the line,
/// keyword and value for a malformed, truncated or other-version file, or one the constructors refuse.
inline OnlineSession read_session(std::istream& in) {
    using namespace detail::session_file;
    Reader reader(in);
    read_header(reader);
    Profile profile = read_profile(reader);
    Predictor predictor = read_predictor(reader);
    Distribution dist = read_distribution(reader);
    const Rule rule = read_rule(reader);
    const SearchOptions options = read_options(reader);
    std::vector<std::uint8_t> first_plan = read_first_plan(reader, profile.conv.size());
    const Line margin_line = reader.next("margin");
    margin_line.expect_values(1);
    const double margin = margin_line.real(0);
    reader.next("end").expect_values(0);
    try {
        return OnlineSession(std::move(predictor), std::move(profile.conv), std::move(profile.branch),
                             std::move(dist), rule, options, std::move(first_plan), margin);
    } catch (const std::invalid_argument& error) {
        refuse(error.what());
    }
}

}  // namespace einet
