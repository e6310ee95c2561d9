// C++ test driver for the header-only core, run under AddressSanitizer and UBSan:
//   cmake -S . -B build/sanitize -DEINET_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug && cmake --build build/sanitize &&
//   ctest --test-dir build/sanitize
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <locale>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "einet/distributions.hpp"
#include "einet/objective.hpp"
#include "einet/online.hpp"
#include "einet/predictor.hpp"
#include "einet/search.hpp"
#include "einet/session_file.hpp"

namespace {

int failures = 0;

void check(bool ok, const char* what, int line) {
    if (!ok) {
        std::fprintf(stderr, "FAILED line %d: %s\n", line, what);
        ++failures;
    }
}
#define CHECK(expr) check((expr), #expr, __LINE__)

// Whether `call` throws an `Error` (std::invalid_argument, einet::Interrupted, ...).
template <class Error, class Call>
bool throws(Call call) {
    try {
        call();
    } catch (const Error&) {
        return true;
    }
    return false;
}

struct Case {
    std::vector<double> conv, branch, scores;
    einet::Distribution dist;
    einet::Instance instance(std::size_t start, double elapsed, double held, einet::Rule rule) const {
        return {{conv.data(), conv.size()}, {branch.data(), branch.size()}, {scores.data(), scores.size()},
                start, elapsed, held, rule};
    }
};

Case random_case(std::mt19937_64& rng, std::size_t n, int kind) {
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    Case c{{}, {}, {}, einet::Uniform(0.0, 1.0)};
    double total = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
        c.conv.push_back(0.2 + unit(rng));
        c.branch.push_back(0.5 * unit(rng));
        c.scores.push_back(unit(rng));
        total += c.conv.back() + c.branch.back();
    }
    switch (kind) {
        case 0: c.dist = einet::Uniform(0.0, total); break;
        case 1: c.dist = einet::Normal(total / 2, total / 4); break;
        case 2: c.dist = einet::Exponential(2.0 / total); break;
        case 3: {
            std::vector<double> samples;
            for (int i = 0; i < 50; ++i) samples.push_back(total * unit(rng));
            c.dist = einet::Empirical(samples);
            break;
        }
        default: c.dist = einet::Deterministic(0.6 * total);
    }
    return c;
}

void test_searches_agree(std::mt19937_64& rng) {
    for (int trial = 0; trial < 400; ++trial) {
        const std::size_t n = 1 + trial % 12;
        const Case c = random_case(rng, n, trial % 5);
        const std::size_t start = static_cast<std::size_t>(trial) % (n + 1);
        const auto rule = trial % 2 ? einet::Rule::best : einet::Rule::latest;
        const auto in = c.instance(start, 0.3 * (trial % 3), 0.1 * (trial % 4), rule);
        const auto exhaustive = einet::search(in, c.dist, {einet::Method::exhaustive});
        const auto hybrid = einet::search(in, c.dist, {einet::Method::hybrid, 3});
        const auto greedy = einet::search(in, c.dist, {einet::Method::greedy});
        const auto random = einet::search(in, c.dist, {einet::Method::random, 4, 64, 9});
        CHECK(exhaustive.value >= hybrid.value - 1e-12);
        CHECK(hybrid.value >= greedy.value - 1e-12);
        CHECK(exhaustive.value >= random.value - 1e-12);
        for (const auto* plan : {&exhaustive, &hybrid, &greedy, &random}) {
            CHECK(plan->mask.size() == in.remaining());
            const double value = einet::expected_accuracy(in, c.dist, {plan->mask.data(), plan->mask.size()});
            CHECK(std::fabs(value - plan->value) <= 1e-12);
        }
    }
}

void test_incremental_matches_full(std::mt19937_64& rng) {
    std::bernoulli_distribution coin(0.4);
    for (int trial = 0; trial < 300; ++trial) {
        const std::size_t n = 1 + trial % 20;
        const Case c = random_case(rng, n, trial % 5);
        const auto in = c.instance(0, 0.1, 0.2, trial % 2 ? einet::Rule::best : einet::Rule::latest);
        std::visit(
            [&](const auto& d) {
                std::vector<std::uint8_t> mask(n);
                for (auto& bit : mask) bit = coin(rng);
                einet::detail::IncrementalPlan<std::decay_t<decltype(d)>> plan(in, d);
                plan.assign(mask.data());
                CHECK(std::fabs(plan.value() - einet::detail::expected_accuracy(in, d, mask.data())) <= 1e-12);
                for (std::size_t j = 0; j < n; ++j) {
                    if (mask[j]) continue;
                    auto grown = mask;
                    grown[j] = 1;
                    CHECK(std::fabs(plan.value_with(j) - einet::detail::expected_accuracy(in, d, grown.data())) <=
                          1e-12);
                }
            },
            c.dist);
    }
}

void test_batches(std::mt19937_64& rng) {
    const std::size_t n = 14, count = 37;
    const Case c = random_case(rng, n, 1);
    std::vector<double> scores(count * n), elapsed(count, 0.5), held(count, 0.1), values(count);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (auto& s : scores) s = unit(rng);
    std::vector<std::uint8_t> masks(count * (n - 2));
    std::vector<std::uint64_t> evaluations(count);
    einet::search_batch({c.conv.data(), n}, {c.branch.data(), n}, scores.data(), count, 2, elapsed.data(),
                        held.data(), einet::Rule::latest, c.dist, {}, {masks.data(), values.data(), evaluations.data()},
                        2);
    for (std::size_t row = 0; row < count; ++row) {
        Case single = c;
        single.scores.assign(scores.begin() + row * n, scores.begin() + (row + 1) * n);
        const auto plan = einet::search(single.instance(2, 0.5, 0.1, einet::Rule::latest), c.dist, {});
        CHECK(plan.value == values[row]);
        CHECK(std::equal(plan.mask.begin(), plan.mask.end(), masks.begin() + row * (n - 2)));
    }
    std::vector<double> out(count);
    const auto in = c.instance(2, 0.5, 0.1, einet::Rule::best);
    einet::expected_accuracy_batch(in, c.dist, masks.data(), count, out.data());
    for (std::size_t row = 0; row < count; ++row) {
        CHECK(out[row] == einet::expected_accuracy(in, c.dist, {masks.data() + row * (n - 2), n - 2}));
    }
}

void test_errors(std::mt19937_64& rng) {
    const Case c = random_case(rng, 4, 0);
    CHECK(throws<std::invalid_argument>([] { einet::Uniform(1.0, 1.0); }));
    CHECK(throws<std::invalid_argument>([] { einet::Uniform(-1.7e308, 1.7e308); }));  // the width overflows
    CHECK(throws<std::invalid_argument>([] { einet::Normal(0.0, 0.0); }));
    CHECK(throws<std::invalid_argument>([] { einet::Exponential(-1.0); }));
    CHECK(throws<std::invalid_argument>([] { einet::Empirical(std::vector<double>{}); }));
    CHECK(throws<std::invalid_argument>([] { einet::Deterministic(NAN); }));
    CHECK(throws<std::invalid_argument>([&] { einet::search(c.instance(5, 0.0, 0.0, einet::Rule::latest), c.dist, {}); }));
    CHECK(throws<std::invalid_argument>([&] { einet::search(c.instance(0, -1.0, 0.0, einet::Rule::latest), c.dist, {}); }));
    CHECK(throws<std::invalid_argument>([&] { einet::search(c.instance(0, 0.0, 1.5, einet::Rule::latest), c.dist, {}); }));
    CHECK(throws<std::invalid_argument>([] { einet::parse_method("simplex"); }));
    CHECK(throws<std::invalid_argument>([] { einet::parse_rule("first"); }));
    Case bad = c;
    bad.scores[2] = NAN;
    CHECK(throws<std::invalid_argument>([&] { einet::search(bad.instance(0, 0.0, 0.0, einet::Rule::latest), c.dist, {}); }));
    const std::vector<std::uint8_t> two{0, 2, 0, 1};
    CHECK(throws<std::invalid_argument>(
        [&] { einet::expected_accuracy(c.instance(0, 0.0, 0.0, einet::Rule::latest), c.dist, {two.data(), 4}); }));
    const Case big = random_case(rng, 26, 0);
    CHECK(throws<std::invalid_argument>(
        [&] { einet::search(big.instance(0, 0.0, 0.0, einet::Rule::latest), big.dist, {einet::Method::exhaustive}); }));
}

void test_predictor_and_session(std::mt19937_64& rng) {
    const std::size_t n = 6, hidden = 8;
    std::normal_distribution<double> weight(0.0, 0.5);
    einet::DenseLayer first{2 * n, hidden, std::vector<double>(2 * n * hidden), std::vector<double>(hidden)};
    einet::DenseLayer last{hidden, n, std::vector<double>(hidden * n), std::vector<double>(n)};
    for (auto* layer : {&first, &last}) {
        for (auto& w : layer->weight) w = weight(rng);
        for (auto& b : layer->bias) b = weight(rng);
    }
    const einet::Predictor predictor({first, last}, true);
    const Case c = random_case(rng, n, 1);
    std::vector<double> observed(n, 0.0), scores(n);
    std::vector<std::uint8_t> seen(n, 0);
    observed[0] = 0.7;
    seen[0] = 1;
    predictor.predict(observed.data(), seen.data(), scores.data());
    for (double s : scores) CHECK(s > 0.0 && s < 1.0);
    const auto step = einet::online_step(predictor, {c.conv.data(), n}, {c.branch.data(), n}, {observed.data(), n},
                                         {seen.data(), n}, 1, 0.5, 0, 0.0, einet::Rule::latest, c.dist, {});
    CHECK(step.plan.mask.size() == n - 1);
    CHECK(step.held == scores[0]);
    einet::OnlineSession session(predictor, c.conv, c.branch, c.dist, einet::Rule::latest, {},
                                 std::vector<std::uint8_t>(n, 1), 0.01);
    for (int sample = 0; sample < 20; ++sample) {
        session.begin();
        double t = 0.0;
        for (std::size_t b = 0; b < n; ++b) {
            t += c.conv[b];
            if (session.run_branch(b)) {
                t += c.branch[b];
                session.observe(b, 0.05 * static_cast<double>(sample), t);
            }
        }
    }
    CHECK(throws<std::invalid_argument>([&] { session.observe(n, 0.5, 1.0); }));
    CHECK(throws<std::invalid_argument>([&] { session.observe(0, 1.5, 1.0); }));
    CHECK(throws<std::invalid_argument>([&] { einet::Predictor({last}, true); }));
}

// A locale that writes numbers as badly as it can: decimal comma, digits grouped in threes.
struct CommaGrouping : std::numpunct<char> {
    char do_decimal_point() const override { return ','; }
    char do_thousands_sep() const override { return '.'; }
    std::string do_grouping() const override { return "\3"; }
};

std::string saved(const einet::OnlineSession& session) {
    std::ostringstream out;
    einet::write_session(out, session);
    return out.str();
}

einet::OnlineSession loaded(const std::string& text) {
    std::istringstream in(text);
    return einet::read_session(in);
}

// The error read_session gives for `text` ("" if none).
std::string load_error(const std::string& text) {
    try {
        loaded(text);
    } catch (const std::invalid_argument& error) {
        return error.what();
    }
    return "";
}

bool mentions(const std::string& message, const char* part) { return message.find(part) != std::string::npos; }

std::string replaced(std::string text, const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    return at == std::string::npos ? text : text.replace(at, from.size(), to);
}

// `text` with the first value on the first line of `keyword` set to `value`.
std::string with_value(std::string text, const std::string& keyword, const std::string& value) {
    const auto start = text.find("\n" + keyword + " ") + keyword.size() + 2;
    return text.replace(start, text.find_first_of(" \n", start) - start, value);
}

// A random predictor of `n` exits: one layer, or two with 7 hidden units.
einet::Predictor random_predictor(std::mt19937_64& rng, std::size_t n, std::size_t num_layers, bool calibrated) {
    std::normal_distribution<double> weight(0.0, 1.0);
    std::vector<std::size_t> widths{2 * n, 7, n};
    if (num_layers == 1) widths.erase(widths.begin() + 1);
    std::vector<einet::DenseLayer> layers;
    for (std::size_t k = 0; k + 1 < widths.size(); ++k) {
        einet::DenseLayer layer{widths[k], widths[k + 1], {}, {}};
        for (std::size_t i = 0; i < layer.inputs * layer.outputs; ++i) layer.weight.push_back(weight(rng));
        for (std::size_t o = 0; o < layer.outputs; ++o) layer.bias.push_back(weight(rng));
        layers.push_back(layer);
    }
    return einet::Predictor(layers, calibrated);
}

// write_session then read_session gives a session that makes the same decisions, and writes the same text:
// every distribution, one and two layers, calibrated or not, every rule and method.
void test_session_file(std::mt19937_64& rng) {
    const std::size_t n = 5;
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    const einet::Method methods[] = {einet::Method::exhaustive, einet::Method::greedy, einet::Method::hybrid,
                                     einet::Method::random};
    std::string example;
    for (int combination = 0; combination < 5 * 2 * 2 * 2 * 4; ++combination) {
        const int kind = combination % 5;
        const std::size_t num_layers = 1 + combination / 5 % 2;
        const bool calibrated = combination / 10 % 2 == 1;
        const einet::Rule rule = combination / 20 % 2 ? einet::Rule::best : einet::Rule::latest;
        const einet::SearchOptions options{methods[combination / 40], 2, 50, rng()};
        const Case c = random_case(rng, n, kind);
        std::vector<std::uint8_t> first(n);
        for (auto& run : first) run = static_cast<std::uint8_t>(rng() & 1);
        einet::OnlineSession original(random_predictor(rng, n, num_layers, calibrated), c.conv, c.branch, c.dist,
                                      rule, options, first, 0.1 * unit(rng));
        const std::string text = saved(original);
        einet::OnlineSession copy = loaded(text);
        CHECK(saved(copy) == text);
        CHECK(copy.conv() == original.conv() && copy.branch() == original.branch());
        CHECK(copy.margin() == original.margin() && copy.first_plan() == original.first_plan());
        CHECK(copy.options().seed == options.seed && copy.rule() == rule && copy.options().method == options.method);
        CHECK(copy.predictor().layers().back().weight == original.predictor().layers().back().weight);
        for (int sample = 0; sample < 4; ++sample) {
            original.begin();
            copy.begin();
            double t = 0.0;
            for (std::size_t b = 0; b < n; ++b) {
                t += c.conv[b];
                CHECK(copy.run_branch(b) == original.run_branch(b));
                if (original.run_branch(b)) {
                    t += c.branch[b];
                    const double confidence = unit(rng);
                    original.observe(b, confidence, t);
                    copy.observe(b, confidence, t);
                }
            }
        }
        if (kind == 3 && num_layers == 2) example = text;  // the last: calibrated, rule best, random search
    }

    // The caller's stream locale changes nothing; a decimal number is read as well as a hexfloat.
    const einet::OnlineSession session = loaded(example);
    std::ostringstream commas;
    commas.imbue(std::locale(std::locale::classic(), new CommaGrouping));
    einet::write_session(commas, session);
    CHECK(commas.str() == example);
    CHECK(loaded(with_value(example, "margin", "0.25")).margin() == 0.25);

    // Malformed, truncated and other-version files, each named in the message.
    CHECK(mentions(load_error("einet-offline-session 1\n"), "'einet-offline-session', not 'einet-online-session'"));
    CHECK(mentions(load_error(replaced(example, "einet-online-session 1", "einet-online-session 2")), "version '2'"));
    CHECK(mentions(load_error(""), "truncated"));
    CHECK(mentions(load_error(example.substr(0, example.find("\nrule") + 1)), "truncated: it ends after line"));
    CHECK(mentions(load_error(example.substr(0, example.find("\nrule") - 3)), "truncated: it ends inside line"));
    CHECK(saved(loaded(example.substr(0, example.size() - 1))) == example);  // the last newline may go
    for (std::size_t cut = 0; cut + 1 < example.size(); ++cut) {
        const std::string error = load_error(example.substr(0, cut));
        CHECK(mentions(error, "einet session file"));
        if (error.empty()) std::fprintf(stderr, "a file cut to %zu bytes was read\n", cut);
    }
    CHECK(mentions(load_error(with_value(example, "weight", "nan")), "'nan' is not a finite number"));
    CHECK(mentions(load_error(replaced(example, "\nweight ", "\nweight 0x1p+0 ")), "(weight): expected 70"));
    CHECK(mentions(load_error(with_value(example, "conv", "abc")), "(conv): 'abc' is not a finite number"));
    CHECK(mentions(load_error(replaced(example, "\ndepth 2", "\ndepth two")), "'two' is not an unsigned integer"));
    CHECK(mentions(load_error(replaced(example, "\nrule best", "\nrule first")), "(rule): unknown rule 'first'"));
    CHECK(mentions(load_error(replaced(example, "\nmargin 0x", "\nmargin 0.25 0x")), "(margin): expected 1"));
    CHECK(mentions(load_error(replaced(example, "\nblocks 5", "\nblocks 4")), "(conv): expected 4"));
    CHECK(mentions(load_error(replaced(example, "\nbranch ", "\nbrunch ")), "expected 'branch', got 'brunch'"));
    CHECK(mentions(load_error(replaced(example, "\nmargin 0x", "\nmargin -0x")), "margin must be >= 0"));
    CHECK(mentions(load_error(replaced(example, "distribution empirical", "distribution empiricle")),
                   "unknown distribution 'empiricle'"));
}

bool close(double a, double b, double rel) { return std::fabs(a - b) <= rel * std::fabs(b); }

void test_normal_tails_and_nan_policy() {
    // Exact values from mpmath at 50 digits; before, the first gave 0 and the next two were refused.
    CHECK(close(einet::Normal(-8.2, 1.0).cdf(0.05), 0.3410853916300523362, 1e-13));
    CHECK(close(einet::Normal(-30.0, 2.0).cdf(0.01), 0.072574563847890688418, 1e-11));
    CHECK(close(einet::Normal(-37.0, 1.0).cdf(1e-3), 0.036350353163608294605, 1e-11));
    CHECK(close(einet::Normal(10.0, 1.0).cdf(1.0), 1.1285122074235990425e-19, 1e-13));
    CHECK(throws<std::invalid_argument>([] { einet::Normal(-100.0, 1.0); }));
    const double inf = std::numeric_limits<double>::infinity();
    const std::vector<einet::Distribution> every{einet::Uniform(0.0, 2.0), einet::Normal(1.0, 0.5),
                                                 einet::Exponential(1.0), einet::Empirical({0.5, 1.0, 1.5}),
                                                 einet::Deterministic(1.0)};
    for (const auto& dist : every) {
        CHECK(std::isnan(einet::cdf(dist, NAN)));
        CHECK(einet::cdf(dist, -inf) == 0.0);
        CHECK(einet::cdf(dist, inf) == 1.0);
    }
}

void test_work_caps(std::mt19937_64& rng) {
    const Case c = random_case(rng, 64, 0);
    const auto in = c.instance(0, 0.0, 0.0, einet::Rule::latest);
    CHECK(throws<std::invalid_argument>([&] { einet::search(in, c.dist, {einet::Method::hybrid, 21}); }));
    CHECK(throws<std::invalid_argument>([&] { einet::search(in, c.dist, {einet::Method::hybrid, 20}); }));
    CHECK(throws<std::invalid_argument>([&] { einet::search(in, c.dist, {einet::Method::random, 4, 10'000'001}); }));
    CHECK(throws<std::invalid_argument>([&] { einet::validate(einet::SearchOptions{einet::Method::hybrid, 20}, 33); }));
    // 2^20 x 32 = 2^25 passes the prefix cap, but 2^20 greedy completions over 12 blocks exceed the work cap.
    CHECK(throws<std::invalid_argument>([&] { einet::validate(einet::SearchOptions{einet::Method::hybrid, 20}, 32); }));
    einet::validate(einet::SearchOptions{einet::Method::hybrid, 20}, 21);
    einet::validate(einet::SearchOptions{einet::Method::hybrid, 20}, 1);
    // The work cap (2^27 block steps) bounds every search's time, also where depth and budget are small.
    einet::validate(einet::SearchOptions{einet::Method::greedy}, 926);
    CHECK(throws<std::invalid_argument>([&] { einet::validate(einet::SearchOptions{einet::Method::greedy}, 927); }));
    einet::validate(einet::SearchOptions{einet::Method::hybrid, 4}, 358);
    CHECK(throws<std::invalid_argument>([&] { einet::validate(einet::SearchOptions{einet::Method::hybrid, 4}, 359); }));
    einet::validate(einet::SearchOptions{einet::Method::random, 4, 10'000'000}, 13);
    CHECK(throws<std::invalid_argument>([&] { einet::validate(einet::SearchOptions{einet::Method::random, 4, 1000}, 200'000); }));
    einet::validate(einet::SearchOptions{einet::Method::exhaustive}, 25);
    // Steps weigh what their CDF costs: erfc for Normal, a binary search for Empirical.
    const einet::Distribution normal = einet::Normal(1.0, 1.0);
    const einet::Distribution big_trace = einet::Empirical(std::vector<double>(1 << 20, 1.0));
    CHECK(einet::detail::cdf_cost(big_trace) == 7.0);
    CHECK(einet::detail::cdf_cost(normal) == 4.0);
    CHECK(einet::detail::cdf_cost(einet::Uniform(0.0, 1.0)) == 1.0);
    einet::validate(einet::SearchOptions{einet::Method::exhaustive}, 24, einet::detail::cdf_cost(normal));
    CHECK(throws<std::invalid_argument>([&] {
        einet::validate(einet::SearchOptions{einet::Method::exhaustive}, 25, einet::detail::cdf_cost(normal));
    }));
    CHECK(throws<std::invalid_argument>([&] {
        einet::validate(einet::SearchOptions{einet::Method::greedy}, 926, einet::detail::cdf_cost(big_trace));
    }));
    CHECK(throws<std::invalid_argument>([&] {
        einet::validate(einet::SearchOptions{einet::Method::greedy}, std::numeric_limits<std::size_t>::max());
    }));
    CHECK(throws<std::invalid_argument>([] { einet::detail::pow2(64); }));
    CHECK(einet::detail::pow2(63) == std::uint64_t{1} << 63);
    std::vector<double> scores(4 * 64, 0.5), elapsed(4, 0.0), held(4, 0.0), values(4);
    std::vector<std::uint8_t> masks(4 * 64);
    std::vector<std::uint64_t> evaluations(4);
    CHECK(throws<std::invalid_argument>([&] {
        einet::search_batch({c.conv.data(), 64}, {c.branch.data(), 64}, scores.data(), 4, 0, elapsed.data(),
                            held.data(), einet::Rule::latest, c.dist, {einet::Method::greedy},
                            {masks.data(), values.data(), evaluations.data()}, einet::kMaxThreads + 1);
    }));
}


void test_stop_check(std::mt19937_64& rng) {
    const Case c = random_case(rng, 40, 1);
    const auto in = c.instance(0, 0.0, 0.0, einet::Rule::latest);
    // Each search asks about every kPollInterval evaluations, and stops when told.
    for (const einet::SearchOptions options : {einet::SearchOptions{einet::Method::random, 4, 200'000},
                                               einet::SearchOptions{einet::Method::hybrid, 11}}) {
        int asked = 0;
        const einet::StopCheck never = [&] { return ++asked < 0; };
        const auto plan = einet::search(in, c.dist, options, never);
        CHECK(asked > 0);
        CHECK(static_cast<std::uint64_t>(asked) <= plan.evaluations / einet::kPollInterval + 1);
        CHECK(plan.value == einet::search(in, c.dist, options).value);
        int calls = 0;
        CHECK(throws<einet::Interrupted>([&] { einet::search(in, c.dist, options, [&] { return ++calls == 3; }); }));
        CHECK(calls == 3);
    }
    const Case small = random_case(rng, 25, 0);
    int calls = 0;
    CHECK(throws<einet::Interrupted>([&] {
        einet::search(small.instance(0, 0.0, 0.0, einet::Rule::best), small.dist, {einet::Method::exhaustive},
                      [&] { return ++calls == 2; });
    }));
    // A batch: the stop (or any exception) in one thread stops all of them, and all are joined.
    const std::size_t n = 40, count = 16;
    std::vector<double> scores(count * n, 0.5), elapsed(count, 0.0), held(count, 0.0), values(count);
    std::vector<std::uint8_t> masks(count * n);
    std::vector<std::uint64_t> evaluations(count);
    auto batch = [&](const einet::StopCheck& stop) {
        einet::search_batch({c.conv.data(), n}, {c.branch.data(), n}, scores.data(), count, 0, elapsed.data(),
                            held.data(), einet::Rule::latest, c.dist, {einet::Method::random, 4, 100'000},
                            {masks.data(), values.data(), evaluations.data()}, 4, stop);
    };
    std::atomic<int> asked{0};
    CHECK(throws<einet::Interrupted>([&] { batch([&] { return ++asked >= 5; }); }));
    bool runtime_error = false;
    try {
        batch([&] {
            if (++asked > 8) throw std::runtime_error("from the stop check");
            return false;
        });
    } catch (const std::runtime_error& error) {
        runtime_error = std::string(error.what()) == "from the stop check";
    }
    CHECK(runtime_error);
    batch([] { return false; });
    for (std::size_t row = 0; row < count; ++row) CHECK(evaluations[row] == 100'000);
}

}  // namespace

int main() {
    std::mt19937_64 rng(12345);
    test_searches_agree(rng);
    test_incremental_matches_full(rng);
    test_batches(rng);
    test_errors(rng);
    test_predictor_and_session(rng);
    test_normal_tails_and_nan_policy();
    test_work_caps(rng);
    test_stop_check(rng);
    test_session_file(rng);
    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return EXIT_FAILURE;
    }
    std::printf("einet core: all checks passed\n");
    return EXIT_SUCCESS;
}
