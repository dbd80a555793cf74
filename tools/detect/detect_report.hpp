#pragma once
// report.html of focuspatch-detect: a table of every inspected image (category, score, verdict,
// top keyword) and, per category it was routed to, rows of image | heat map | predicted mask. The
// images are files in the output folder, linked relatively (common/html_report.hpp).
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/html_report.hpp"
#include "focuspatch/anomaly/detector.hpp"

namespace focuspatch::tools {

class DetectReport {
 public:
  // One inspected image. Paths are relative to the output folder; the caller names the image, heat
  // map and (when the category is calibrated) predicted mask files; score and verdict come from d.
  void add(const std::string& input_path, const Detection& d, html::ImageRow row) {
    row.score = d.image_score;
    if (d.normalized_score) row.normalized_score = *d.normalized_score;
    if (d.verdict != Verdict::Uncalibrated) row.anomalous_verdict = d.verdict == Verdict::Anomalous;
    const std::string keyword = d.top_keywords.empty() ? "" : d.top_keywords.front().name;
    table_.rows.push_back({input_path, d.route.category, html::format_number(d.image_score),
                           row.normalized_score ? html::format_number(*row.normalized_score, "%.3f") : "n/a",
                           row.anomalous_verdict ? (*row.anomalous_verdict ? "anomalous" : "normal") : "not calibrated", keyword});
    if (row.details.empty()) row.details = "routed to: " + d.route.category + (keyword.empty() ? "" : ", top keyword: " + keyword);
    rows_[d.route.category].push_back(std::move(row));
  }

  std::string render(std::vector<std::string> facts, std::vector<std::string> notes = {}) const {
    html::Report page;
    page.title = "focuspatch-detect: " + std::to_string(table_.rows.size()) + " image(s)";
    page.facts = std::move(facts);
    page.tables.push_back(table_);
    page.notes = std::move(notes);
    for (const auto& [category, rows] : rows_) page.sections.push_back({category, {}, rows});
    return html::render_html(page);
  }

 private:
  html::Table table_{"every image (normalized score: 0.5 = the threshold; n/a without calibration)",
                     {"image", "category", "score", "normalized", "verdict", "top keyword"},
                     {}};
  std::map<std::string, std::vector<html::ImageRow>> rows_;  // by routed category, in name order
};

}  // namespace focuspatch::tools
