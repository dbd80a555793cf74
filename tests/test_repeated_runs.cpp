// Mean and sample standard deviation over repeated shot draws (eval/repeated_runs.hpp), against
// values worked out by hand below.
#include <doctest/doctest.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "focuspatch/eval/repeated_runs.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
using namespace focuspatch::eval;

namespace {

CategoryResult category(const std::string& name, double image_auroc, std::optional<double> pixel_auroc, std::size_t routed) {
  CategoryResult c;
  c.name = name;
  c.test_images = 4;
  c.routed_correctly = routed;
  c.image.auroc = image_auroc;
  c.pixel_evaluated = pixel_auroc.has_value();
  c.pixel.auroc = pixel_auroc.value_or(0.0);
  return c;
}

EvaluationReport run(std::uint64_t seed, std::vector<CategoryResult> categories, CategoryResult mean) {
  EvaluationReport r;
  r.seed = seed;
  r.categories = std::move(categories);
  r.mean = std::move(mean);
  return r;
}

}  // namespace

TEST_CASE("runs summary: mean and sample standard deviation per metric, unmeasured runs left out") {
  // Three draws. bottle I-AUROC 0.5, 0.7, 0.9: mean 0.7, squared deviations 0.04 + 0 + 0.04, divided
  // by N - 1 = 2 gives 0.04, std 0.2. screw P-AUROC 0.6, (not measured), 0.8: mean 0.7 over 2 runs,
  // squares 0.01 + 0.01 over 1, std sqrt(0.02) = 0.1414213562. bottle routed 3/4, 4/4, 4/4: mean
  // 11/12, deviations -1/6, 1/12, 1/12, squares 1/36 + 1/144 + 1/144 = 6/144, over 2: 1/48, std 0.1443375673.
  const std::vector<EvaluationReport> runs = {
      run(7, {category("bottle", 0.5, 0.9, 3), category("screw", 0.6, 0.6, 4)}, category("mean", 0.55, 0.75, 7)),
      run(8, {category("bottle", 0.7, 0.9, 4), category("screw", 0.6, std::nullopt, 4)}, category("mean", 0.65, 0.9, 8)),
      run(9, {category("bottle", 0.9, 0.9, 4), category("screw", 0.6, 0.8, 4)}, category("mean", 0.75, 0.85, 8)),
  };
  const RunsSummary s = summarize_runs(runs);
  CHECK(s.seeds == std::vector<std::uint64_t>{7, 8, 9});
  REQUIRE(s.categories.size() == 2);
  const MetricSpread& b = s.categories[0].metric("image_auroc");
  CHECK(b.runs == 3);
  CHECK(*b.mean == doctest::Approx(0.7).epsilon(1e-12));
  CHECK(*b.sample_std == doctest::Approx(0.2).epsilon(1e-12));
  const MetricSpread& sp = s.categories[1].metric("pixel_auroc");
  CHECK(sp.runs == 2);
  REQUIRE(sp.values.size() == 3);
  CHECK_FALSE(sp.values[1].has_value());
  CHECK(*sp.mean == doctest::Approx(0.7).epsilon(1e-12));
  CHECK(*sp.sample_std == doctest::Approx(0.1414213562373095).epsilon(1e-12));
  const MetricSpread& constant = s.categories[1].metric("image_auroc");
  CHECK(*constant.sample_std == doctest::Approx(0.0));
  const MetricSpread& routed = s.categories[0].metric("routed");
  CHECK(*routed.mean == doctest::Approx(11.0 / 12.0).epsilon(1e-12));
  CHECK(*routed.sample_std == doctest::Approx(std::sqrt(1.0 / 48.0)).epsilon(1e-12));
  // The mean row is summarized from the reports' own mean rows: 0.55, 0.65, 0.75 -> 0.65 ± 0.1.
  CHECK(s.mean.name == "mean");
  CHECK(*s.mean.metric("image_auroc").mean == doctest::Approx(0.65).epsilon(1e-12));
  CHECK(*s.mean.metric("image_auroc").sample_std == doctest::Approx(0.1).epsilon(1e-12));
  // Every pixel metric of screw counts the two runs that measured pixels (AUPRO 0 there is a value).
  CHECK(s.categories[1].metric("aupro").runs == 2);
  CHECK(test::contains(test::error_of([&] { (void)s.mean.metric("recall"); }), "no metric 'recall' in the summary of 'mean'"));
}

TEST_CASE("runs summary: one run has no standard deviation; never-measured metrics have no mean") {
  const std::vector<EvaluationReport> one = {run(0, {category("bottle", 0.8, std::nullopt, 4)}, category("mean", 0.8, std::nullopt, 4))};
  const RunsSummary s = summarize_runs(one);
  CHECK(*s.categories[0].metric("image_auroc").mean == doctest::Approx(0.8));
  CHECK_FALSE(s.categories[0].metric("image_auroc").sample_std.has_value());
  CHECK_FALSE(s.categories[0].metric("pixel_auroc").mean.has_value());
  CHECK(s.categories[0].metric("pixel_auroc").runs == 0);
}

TEST_CASE("runs summary: a new metric is one more accessor") {
  std::vector<EvaluationReport> runs = {run(0, {category("bottle", 0.5, 0.5, 4)}, category("mean", 0.5, 0.5, 4)),
                                        run(1, {category("bottle", 0.5, 0.5, 4)}, category("mean", 0.5, 0.5, 4))};
  runs[0].categories[0].anomalous = 1;
  runs[1].categories[0].anomalous = 3;
  std::vector<MetricAccessor> metrics = category_metrics();
  metrics.push_back({"anomalous", [](const CategoryResult& c) { return std::optional<double>(static_cast<double>(c.anomalous)); }});
  const RunsSummary s = summarize_runs(runs, metrics);
  const MetricSpread& a = s.categories[0].metric("anomalous");
  CHECK(*a.mean == doctest::Approx(2.0));
  CHECK(*a.sample_std == doctest::Approx(std::sqrt(2.0)));  // (1 + 1) / (2 - 1)
  CHECK(s.categories[0].metrics.size() == category_metrics().size() + 1);
}

TEST_CASE("runs summary: runs over different categories are refused") {
  const std::vector<EvaluationReport> runs = {run(0, {category("bottle", 0.5, 0.5, 4)}, category("mean", 0.5, 0.5, 4)),
                                              run(1, {category("screw", 0.5, 0.5, 4)}, category("mean", 0.5, 0.5, 4))};
  CHECK(test::contains(test::error_of([&] { (void)summarize_runs(runs); }),
                       "run with seed 1 has category 'screw' where the first run has 'bottle'"));
  CHECK(test::contains(test::error_of([&] { (void)summarize_runs(std::vector<EvaluationReport>{}); }), "no runs"));
}
