#pragma once
// Summary of repeated few-shot evaluations: the same test set evaluated with N shot draws (seeds
// S, S+1, ..., S+N-1), reduced per category and for the mean row to the mean and the standard
// deviation of every metric over the runs.
//
// The standard deviation is the SAMPLE one (divisor N - 1, Bessel's correction): the runs are a
// sample of the possible shot draws, and the spread between draws is what a reader wants to
// estimate. With one run it is undefined (std::nullopt, "n/a" in tables, null in JSON), not 0.
//
// Metrics are a list of (name, accessor) pairs, so a new field of CategoryResult is summarized by
// adding one line to category_metrics(). An accessor returns std::nullopt where the metric was not
// measured in a run (pixel metrics without masks); such runs are left out of that metric's mean
// and deviation, and `runs` says how many were counted.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/eval/evaluation.hpp"

namespace focuspatch::eval {

struct MetricAccessor {
  std::string name;  // as in results.json, e.g. "image_auroc"
  std::function<std::optional<double>(const CategoryResult&)> value;
};

// Every summarized metric of a CategoryResult, in table order.
inline std::vector<MetricAccessor> category_metrics() {
  using Value = std::optional<double>;
  auto pixel = [](double v, const CategoryResult& c) { return c.pixel_evaluated ? Value(v) : std::nullopt; };
  auto finite = [](double v) { return std::isfinite(v) ? Value(v) : std::nullopt; };
  return {
      {"routed", [](const CategoryResult& c) {
         return c.test_images == 0 ? std::nullopt
                                   : Value(static_cast<double>(c.routed_correctly) / static_cast<double>(c.test_images));
       }},
      {"image_auroc", [](const CategoryResult& c) { return Value(c.image.auroc); }},
      {"image_ap", [](const CategoryResult& c) { return Value(c.image.average_precision); }},
      {"image_f1_max", [](const CategoryResult& c) { return Value(c.image.f1_max); }},
      {"pixel_auroc", [pixel](const CategoryResult& c) { return pixel(c.pixel.auroc, c); }},
      {"pixel_ap", [pixel](const CategoryResult& c) { return pixel(c.pixel.average_precision, c); }},
      {"pixel_f1_max", [pixel](const CategoryResult& c) { return pixel(c.pixel.f1_max, c); }},
      {"aupro", [pixel](const CategoryResult& c) { return pixel(c.aupro, c); }},
      // The operating point at the calibrated thresholds: NaN (uncalibrated, undefined) is "not measured".
      {"image_precision", [finite](const CategoryResult& c) { return finite(c.image_precision); }},
      {"image_recall", [finite](const CategoryResult& c) { return finite(c.image_recall); }},
      {"image_f1", [finite](const CategoryResult& c) { return finite(c.image_f1); }},
      {"false_alarm_rate", [finite](const CategoryResult& c) { return finite(c.false_alarm_rate); }},
      {"pixel_precision", [finite](const CategoryResult& c) { return finite(c.pixel_precision); }},
      {"pixel_recall", [finite](const CategoryResult& c) { return finite(c.pixel_recall); }},
      {"pixel_iou", [finite](const CategoryResult& c) { return finite(c.pixel_iou); }},
  };
}

struct MetricSpread {
  std::string name;
  std::vector<std::optional<double>> values;  // one per run, nullopt where not measured
  std::size_t runs = 0;                      // runs with a value
  std::optional<double> mean;                // nullopt when no run measured it
  std::optional<double> sample_std;          // nullopt with fewer than two values
};

struct CategorySpread {
  std::string name;
  std::vector<MetricSpread> metrics;  // in the order of the accessors

  const MetricSpread& metric(std::string_view metric_name) const {
    for (const MetricSpread& m : metrics)
      if (m.name == metric_name) return m;
    fail("no metric '", metric_name, "' in the summary of '", name, "'");
  }
};

struct RunsSummary {
  std::vector<std::uint64_t> seeds;      // one per run
  std::vector<CategorySpread> categories;  // in the reports' category order
  CategorySpread mean;                     // of the reports' mean rows
};

// Mean and sample standard deviation of the values present (two-pass: mean first, then squared
// deviations from it, which keeps the cancellation of the one-pass formula away).
inline MetricSpread spread_of(std::string name, std::vector<std::optional<double>> values) {
  MetricSpread s;
  s.name = std::move(name);
  s.values = std::move(values);
  double sum = 0;
  for (const auto& v : s.values)
    if (v) sum += *v, ++s.runs;
  if (s.runs == 0) return s;
  const double mean = sum / static_cast<double>(s.runs);
  s.mean = mean;
  if (s.runs < 2) return s;
  double squares = 0;
  for (const auto& v : s.values)
    if (v) squares += (*v - mean) * (*v - mean);
  s.sample_std = std::sqrt(squares / static_cast<double>(s.runs - 1));
  return s;
}

// The runs must cover the same categories in the same order (the same dataset, only the seed differs).
inline RunsSummary summarize_runs(std::span<const EvaluationReport> runs,
                                  const std::vector<MetricAccessor>& metrics = category_metrics()) {
  require(!runs.empty(), "summarize_runs: no runs");
  RunsSummary out;
  const std::vector<CategoryResult>& first = runs.front().categories;
  for (const EvaluationReport& r : runs) {
    out.seeds.push_back(r.seed);
    require(r.categories.size() == first.size(), "summarize_runs: run with seed ", r.seed, " has ", r.categories.size(),
            " categories, the first run ", first.size());
    for (std::size_t c = 0; c < first.size(); ++c)
      require(r.categories[c].name == first[c].name, "summarize_runs: run with seed ", r.seed, " has category '",
              r.categories[c].name, "' where the first run has '", first[c].name, "'");
  }
  auto summarize = [&](const std::string& name, auto pick) {
    CategorySpread spread;
    spread.name = name;
    for (const MetricAccessor& m : metrics) {
      std::vector<std::optional<double>> values;
      for (const EvaluationReport& r : runs) values.push_back(m.value(pick(r)));
      spread.metrics.push_back(spread_of(m.name, std::move(values)));
    }
    return spread;
  };
  for (std::size_t c = 0; c < first.size(); ++c)
    out.categories.push_back(summarize(first[c].name, [c](const EvaluationReport& r) -> const CategoryResult& { return r.categories[c]; }));
  out.mean = summarize(runs.front().mean.name, [](const EvaluationReport& r) -> const CategoryResult& { return r.mean; });
  return out;
}

}  // namespace focuspatch::eval
