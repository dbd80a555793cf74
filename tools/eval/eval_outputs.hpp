#pragma once
// What focuspatch-eval writes besides its per-image results: the spread over --runs shot draws
// (Markdown and JSON), and report.html with the images it shows (copied into DIR/report/ so that
// the page works from the output folder alone).
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/html_report.hpp"
#include "focuspatch/anomaly/detector.hpp"
#include "focuspatch/eval/dataset.hpp"
#include "focuspatch/eval/evaluation.hpp"
#include "focuspatch/eval/repeated_runs.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/json.hpp"

namespace focuspatch::tools {

namespace fs = std::filesystem;

// A fraction in percent with one decimal, or "n/a" where it was not measured.
inline std::string percent_or_na(std::optional<double> v) {
  if (!v) return "n/a";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", 100.0 * *v);
  return buf;
}

inline std::optional<double> pixel_value(const eval::CategoryResult& c, double v) {
  return c.pixel_evaluated ? std::optional<double>(v) : std::nullopt;
}

// What the calibration of each category cannot vouch for (too few normal images for the target
// rate, or a rough estimate), for the Markdown, the HTML report and the console.
inline std::vector<std::string> calibration_notes(const eval::EvaluationReport& r) {
  std::vector<std::string> notes;
  for (const auto& c : r.categories)
    if (c.calibration_details)
      if (const std::string w = c.calibration_details->warning(); !w.empty()) notes.push_back(c.name + ": " + w);
  return notes;
}

// "the pixel metrics of X skip ..." lines for the Markdown, the HTML report and the console.
inline std::vector<std::string> pixel_notes(const eval::EvaluationReport& r) {
  std::vector<std::string> notes;
  for (const auto& c : r.categories) {
    if (!c.pixel_evaluated) {
      notes.push_back(c.name + ": pixel metrics skipped (P-AUROC, P-AP, P-F1max, AUPRO are n/a): no anomalous image has a mask");
    } else if (!c.kinds_without_masks.empty()) {
      std::string kinds;
      for (const auto& k : c.kinds_without_masks) kinds += (kinds.empty() ? "" : ", ") + k;
      notes.push_back(c.name + ": pixel metrics from the images with masks only; no masks for " + kinds);
    }
  }
  if (!notes.empty() && r.mean.pixel_evaluated_categories < r.categories.size())
    notes.push_back("mean: pixel metrics average the " + std::to_string(r.mean.pixel_evaluated_categories) + " of " +
                    std::to_string(r.categories.size()) + " categories that have them");
  return notes;
}

// ---- --runs ---------------------------------------------------------------------------------------

inline std::string mean_std_cell(const eval::MetricSpread& m) {
  if (!m.mean) return "n/a";
  std::string s = percent_or_na(m.mean);
  s += m.sample_std ? " ± " + percent_or_na(m.sample_std) : " ± n/a";
  return s;
}

// A table as Markdown (the figures right-aligned), for results.md and the console; report.html
// renders the same html::Table.
inline std::string markdown(const html::Table& t) {
  std::string md = "|", rule = "|";
  for (std::size_t i = 0; i < t.header.size(); ++i) md += " " + t.header[i] + " |", rule += i == 0 ? "---|" : "---:|";
  md += "\n" + rule + "\n";
  for (const auto& row : t.rows) {
    md += "|";
    for (const auto& cell : row) md += " " + cell + " |";
    md += "\n";
  }
  return md;
}

inline void write_spread(json::Writer& w, const eval::CategorySpread& c) {
  w.begin_object().member("name", c.name).key("metrics").begin_object();
  for (const auto& m : c.metrics) {
    w.key(m.name).begin_object().member("runs", m.runs);
    w.key("mean");
    if (m.mean) w.value(*m.mean); else w.null();
    w.key("std");
    if (m.sample_std) w.value(*m.sample_std); else w.null();
    w.key("values").begin_array();
    for (const auto& v : m.values)
      if (v) w.value(*v); else w.null();
    w.end_array().end_object();
  }
  w.end_object().end_object();
}

// "runs": every run's seed and shot images; "runs_summary": mean and sample std per metric.
inline void write_runs_json(json::Writer& w, const std::vector<eval::EvaluationReport>& runs, const eval::RunsSummary& summary) {
  w.key("runs").begin_array();
  for (const auto& r : runs) {
    w.begin_object().member("seed", r.seed).key("shots").begin_object();
    for (const auto& c : r.categories) {
      w.key(c.name).begin_array();
      for (const auto& p : c.shots) w.value(p.string());
      w.end_array();
    }
    w.end_object().end_object();
  }
  w.end_array();
  w.key("runs_summary").begin_object().member("runs", runs.size());
  w.member("std", "sample standard deviation over the runs (divisor runs - 1); null with one run");
  w.key("categories").begin_array();
  for (const auto& c : summary.categories) write_spread(w, c);
  w.end_array().key("mean");
  write_spread(w, summary.mean);
  w.end_object();
}

// ---- report.html -------------------------------------------------------------------------------

// Copies of the images a report row shows, in DIR/report/<category>/, and the row itself. The heat
// map is the overlay written for the row (a path relative to DIR).
inline html::ImageRow eval_report_row(const fs::path& out_dir, const std::string& category, const std::string& name,
                                      const eval::TestImage& t, const Image& image, const Detection& d,
                                      const std::string& heat_map, const ImageLoadOptions& options) {
  const fs::path dir = out_dir / "report" / category;
  fs::create_directories(dir);
  html::ImageRow row;
  row.label = (t.image.parent_path().filename() / t.image.filename()).generic_string();  // e.g. scratch/000.png
  row.details = (t.anomalous ? "defect: " + t.defect : std::string("normal")) + ", routed to: " + d.route.category;
  row.image = (fs::path("report") / category / (name + "_image.png")).generic_string();
  write_png((out_dir / row.image).string(), image);
  if (!t.mask.empty()) {
    row.ground_truth = (fs::path("report") / category / (name + "_truth.png")).generic_string();
    // Shown as white on black whatever the file's values (VisA's masks are 0/1: nearly black as they are).
    const BinaryMask truth = load_mask(t.mask.string(), options);
    write_mask_png((out_dir / *row.ground_truth).string(), truth.width, truth.height, truth.anomalous);
  }
  row.heat_map = heat_map;
  row.score = d.image_score;
  row.truly_anomalous = t.anomalous;
  return row;
}

inline html::Table html_metrics_table(const eval::EvaluationReport& r) {
  html::Table t;
  t.caption = "metrics in percent (n/a: not measured)";
  t.header = {"category", "images", "routed", "I-AUROC", "I-AP", "I-F1max", "P-AUROC", "P-AP", "P-F1max", "AUPRO"};
  auto row = [&](const eval::CategoryResult& c) {
    const double routed = static_cast<double>(c.routed_correctly) / static_cast<double>(std::max<std::size_t>(1, c.test_images));
    t.rows.push_back({c.name, std::to_string(c.test_images), percent_or_na(routed), percent_or_na(c.image.auroc),
                      percent_or_na(c.image.average_precision), percent_or_na(c.image.f1_max), percent_or_na(pixel_value(c, c.pixel.auroc)),
                      percent_or_na(pixel_value(c, c.pixel.average_precision)), percent_or_na(pixel_value(c, c.pixel.f1_max)),
                      percent_or_na(pixel_value(c, c.aupro))});
  };
  for (const auto& c : r.categories) row(c);
  row(r.mean);
  return t;
}

inline html::Table html_runs_table(const eval::RunsSummary& s) {
  html::Table t;
  t.caption = "mean ± sample standard deviation over " + std::to_string(s.seeds.size()) + " shot draws, in percent";
  t.header = {"category"};
  for (const auto& m : s.mean.metrics) t.header.push_back(m.name);
  auto row = [&](const eval::CategorySpread& c) {
    std::vector<std::string> cells = {c.name};
    for (const auto& m : c.metrics) cells.push_back(mean_std_cell(m));
    t.rows.push_back(std::move(cells));
  };
  for (const auto& c : s.categories) row(c);
  row(s.mean);
  return t;
}

// The operating point at the calibrated thresholds: '-' where a category is uncalibrated or a
// figure undefined (no positive decision: precision).
inline html::Table operating_point_table(const eval::EvaluationReport& r) {
  html::Table t;
  t.caption = "operating point at the calibrated thresholds, in percent (-: uncalibrated or undefined)";
  t.header = {"category", "calibration", "images", "I-threshold", "I-precision", "I-recall", "I-F1", "false alarms (good)",
              "P-threshold", "P-precision", "P-recall", "P-IoU"};
  auto number = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4g", v);
    return std::isfinite(v) ? std::string(buf) : std::string("-");
  };
  auto pct = [](double v) { return std::isfinite(v) ? percent_or_na(v) : std::string("-"); };
  auto row = [&](const eval::CategoryResult& c, bool mean) {
    t.rows.push_back({c.name, mean ? "" : c.calibration, mean ? "" : std::to_string(c.calibration_images.size()), number(c.image_threshold),
                      pct(c.image_precision), pct(c.image_recall), pct(c.image_f1), pct(c.false_alarm_rate), number(c.pixel_threshold),
                      pct(c.pixel_precision), pct(c.pixel_recall), pct(c.pixel_iou)});
  };
  for (const auto& c : r.categories) row(c, false);
  row(r.mean, true);
  return t;
}

// The whole page: the metrics table (and the spread over the runs when there are several), the
// notes on skipped pixel metrics, and per category the rows written while evaluating.
inline html::Report eval_html_report(const eval::EvaluationReport& report, const eval::RunsSummary& summary,
                                     std::vector<std::string> facts, std::map<std::string, std::vector<html::ImageRow>> rows) {
  html::Report page;
  page.title = "focuspatch-eval: " + report.setting + " setting, " + std::to_string(report.shots) + " shot(s)";
  page.facts = std::move(facts);
  page.tables.push_back(html_metrics_table(report));
  page.tables.push_back(operating_point_table(report));
  if (summary.seeds.size() > 1) page.tables.push_back(html_runs_table(summary));
  page.notes = pixel_notes(report);
  for (auto& n : calibration_notes(report)) page.notes.push_back(std::move(n));
  for (const auto& c : report.categories) {
    html::Section section{c.name, {}, std::move(rows[c.name])};
    if (!c.pixel_evaluated) section.notes.push_back("pixel metrics skipped: no masks");
    else if (!c.kinds_without_masks.empty()) section.notes.push_back("pixel metrics from the images with masks only");
    if (section.rows.empty()) section.notes.push_back("no images shown (--overlays 0)");
    page.sections.push_back(std::move(section));
  }
  return page;
}

}  // namespace focuspatch::tools
