#pragma once
// report.html of focuspatch-eval and focuspatch-detect: a page that people open from the output
// folder, also offline and after copying the folder elsewhere. Everything it shows is either in the
// page (inline CSS, no script, no font or stylesheet from the network) or a PNG beside it, linked by
// a relative path. The programs fill a small data model (Report); render_html turns it into the
// page, HTML-escaping every text and attribute and percent-encoding every link, so file names with
// spaces, '#', '&' or '<' neither break the page nor inject markup.
//
// Fields that depend on calibration (predicted mask, verdict, normalized score) are optional: a row
// shows them when present and says "not calibrated" / leaves the cell empty when not.
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace focuspatch::tools::html {

// A table of text cells; the first row is the header. Cells are plain text ("n/a" for a metric
// that was not measured, never a made-up number).
struct Table {
  std::string caption;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

// One inspected image. Paths are relative to the folder report.html is written to.
struct ImageRow {
  std::string label;                          // e.g. the image's file name
  std::string details;                        // e.g. "defect: scratch, routed to: bottle"
  std::string image;                          // the input image (a PNG copy in the output folder)
  std::optional<std::string> ground_truth;    // its ground-truth mask, when the data has one
  std::string heat_map;                       // the heat-map overlay
  std::optional<std::string> predicted_mask;  // the binary mask at the pixel threshold, when calibrated
  double score = 0;                           // the raw image score
  std::optional<double> normalized_score;     // 0.5 = the threshold, when calibrated
  std::optional<bool> anomalous_verdict;      // true: "anomalous", false: "normal"; empty: uncalibrated
  std::optional<bool> truly_anomalous;        // the label, when known (eval): marks wrong verdicts
};

struct Section {
  std::string title;               // e.g. the category
  std::vector<std::string> notes;  // e.g. "pixel metrics skipped: no masks for crack"
  std::vector<ImageRow> rows;
};

struct Report {
  std::string title;
  std::vector<std::string> facts;  // one line each: weights, data, setting, ...
  std::vector<Table> tables;
  std::vector<std::string> notes;  // page-wide notes
  std::vector<Section> sections;
};

inline std::string escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// A relative file path as a URL path: every byte outside RFC 3986's unreserved set and '/' is
// percent-encoded (UTF-8 names stay valid, '#' and '?' stay part of the name).
inline std::string url_path(std::string_view path) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : path) {
    const auto c = static_cast<unsigned char>(ch);
    const bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
                      c == '_' || c == '~' || c == '/';
    if (keep) {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

inline std::string format_number(double v, const char* format = "%.4f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

namespace detail {

inline constexpr const char* kStyle = R"(body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0}th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.images td{text-align:center}table.images img{width:192px;height:auto;image-rendering:pixelated;display:block;margin:auto}
.note{background:#fff6d5;border-left:4px solid #e0b000;padding:.3em .6em;margin:.4em 0}
.anomalous{color:#b00000;font-weight:bold}.normal{color:#006000;font-weight:bold}.wrong{outline:3px solid #b00000}
.muted{color:#777}.facts{margin:0;padding-left:1.2em}
)";

// Figures ("0.75", "-3", "61.1 ± 4.8", "n/a") are right-aligned, words left.
inline bool looks_numeric(const std::string& cell) {
  if (cell == "n/a") return true;
  const std::size_t i = !cell.empty() && (cell[0] == '-' || cell[0] == '+') ? 1 : 0;
  return i < cell.size() && cell[i] >= '0' && cell[i] <= '9';
}

inline void render_table(std::string& out, const Table& t) {
  out += "<table>";
  if (!t.caption.empty()) out += "<caption>" + escape(t.caption) + "</caption>";
  out += "<thead><tr>";
  for (const auto& h : t.header) out += "<th>" + escape(h) + "</th>";
  out += "</tr></thead><tbody>\n";
  for (const auto& row : t.rows) {
    out += "<tr>";
    for (std::size_t i = 0; i < row.size(); ++i)
      out += (i > 0 && looks_numeric(row[i]) ? "<td class=\"num\">" : "<td>") + escape(row[i]) + "</td>";
    out += "</tr>\n";
  }
  out += "</tbody></table>\n";
}

inline std::string image_cell(const std::optional<std::string>& path, std::string_view alt, std::string_view missing) {
  if (!path) return "<td class=\"muted\">" + escape(missing) + "</td>";
  return "<td><a href=\"" + escape(url_path(*path)) + "\"><img src=\"" + escape(url_path(*path)) + "\" alt=\"" + escape(alt) +
         "\"></a></td>";
}

inline void render_row(std::string& out, const ImageRow& r, bool ground_truth_column) {
  const bool wrong = r.anomalous_verdict && r.truly_anomalous && *r.anomalous_verdict != *r.truly_anomalous;
  out += wrong ? "<tr class=\"wrong\">" : "<tr>";
  out += "<td style=\"text-align:left\">" + escape(r.label);
  if (!r.details.empty()) out += "<br><span class=\"muted\">" + escape(r.details) + "</span>";
  out += "</td>";
  out += image_cell(r.image, "image " + r.label, "");
  if (ground_truth_column)
    out += image_cell(r.ground_truth, "ground truth " + r.label, r.truly_anomalous && !*r.truly_anomalous ? "normal" : "no mask");
  out += image_cell(r.heat_map, "heat map " + r.label, "");
  out += image_cell(r.predicted_mask, "predicted mask " + r.label, "not calibrated");
  out += "<td class=\"num\">" + format_number(r.score);
  if (r.normalized_score) out += "<br>normalized " + format_number(*r.normalized_score, "%.3f");
  out += "</td><td>";
  if (r.anomalous_verdict)
    out += *r.anomalous_verdict ? "<span class=\"anomalous\">anomalous</span>" : "<span class=\"normal\">normal</span>";
  else
    out += "<span class=\"muted\">not calibrated</span>";
  if (wrong) out += "<br>(wrong: the image is " + std::string(*r.truly_anomalous ? "anomalous" : "normal") + ")";
  out += "</td></tr>\n";
}

}  // namespace detail

inline std::string render_html(const Report& report) {
  std::string out = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>" + escape(report.title) +
                    "</title>\n<style>" + detail::kStyle + "</style></head>\n<body>\n<h1>" + escape(report.title) + "</h1>\n";
  if (!report.facts.empty()) {
    out += "<ul class=\"facts\">";
    for (const auto& f : report.facts) out += "<li>" + escape(f) + "</li>";
    out += "</ul>\n";
  }
  for (const auto& t : report.tables) detail::render_table(out, t);
  for (const auto& n : report.notes) out += "<p class=\"note\">" + escape(n) + "</p>\n";
  for (const auto& s : report.sections) {
    out += "<h2>" + escape(s.title) + "</h2>\n";
    for (const auto& n : s.notes) out += "<p class=\"note\">" + escape(n) + "</p>\n";
    if (s.rows.empty()) continue;
    // Without labels or masks (detect), a ground-truth column would only say "no mask" on every row.
    const bool ground_truth_column =
        std::any_of(s.rows.begin(), s.rows.end(), [](const ImageRow& r) { return r.ground_truth || r.truly_anomalous; });
    out += "<table class=\"images\"><thead><tr><th>name</th><th>image</th>";
    if (ground_truth_column) out += "<th>ground truth</th>";
    out += "<th>heat map</th><th>predicted mask</th><th>score</th><th>verdict</th></tr></thead><tbody>\n";
    for (const auto& r : s.rows) detail::render_row(out, r, ground_truth_column);
    out += "</tbody></table>\n";
  }
  out += "</body></html>\n";
  return out;
}

}  // namespace focuspatch::tools::html
