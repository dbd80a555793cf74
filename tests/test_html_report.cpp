// report.html (tools/common/html_report.hpp): escaping, links, the optional calibrated fields, and a
// page opened in headless Chromium: every image must load (naturalWidth > 0), no error event may
// fire, nothing may be fetched from the network. The pages the eval and detect programs
// write are opened the same way in test_eval_cli and test_detect_cli.
#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "browser_support.hpp"
#include "cli_support.hpp"
#include "common/html_report.hpp"
#include "focuspatch/io/image.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;
namespace html = focuspatch::tools::html;

namespace {

std::size_t count(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size())) ++n;
  return n;
}

Image solid(int w, int h, std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  Image img;
  img.width = w;
  img.height = h;
  for (int i = 0; i < w * h; ++i) img.rgb.insert(img.rgb.end(), {r, g, b});
  return img;
}


}  // namespace

TEST_CASE("html report: text is escaped and links are percent-encoded") {
  CHECK(html::escape("<a href=\"x\">&'") == "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  CHECK(html::url_path("report/a b/c#1%?.png") == "report/a%20b/c%231%25%3F.png");
  CHECK(html::url_path("caf\xC3\xA9.png") == "caf%C3%A9.png");
  CHECK(html::url_path("Az09-._~/x") == "Az09-._~/x");

  html::Report r;
  r.title = "t <b>";
  r.facts = {"data: /x/<y>"};
  r.tables.push_back({"cap", {"category", "P-AUROC"}, {{"bottle&co", "n/a"}}});
  r.notes = {"pixel metrics skipped: no masks"};
  html::ImageRow row;
  row.label = "<script>alert(1)</script>";
  row.image = "report/a b.png";
  row.heat_map = "overlays/h\".png";
  row.score = 0.25;
  r.sections.push_back({"cat \"1\"", {"note & more"}, {row}});
  const std::string page = html::render_html(r);
  CHECK(count(page, "<script") == 0);
  CHECK(test::contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;"));
  CHECK(test::contains(page, "<title>t &lt;b&gt;</title>"));
  CHECK(test::contains(page, "<td>bottle&amp;co</td><td class=\"num\">n/a</td>"));
  CHECK(test::contains(page, "src=\"report/a%20b.png\""));
  CHECK(test::contains(page, "src=\"overlays/h%22.png\""));
  CHECK(test::contains(page, "<p class=\"note\">pixel metrics skipped: no masks</p>"));
  CHECK(test::contains(page, "<h2>cat &quot;1&quot;</h2>"));
  CHECK(test::contains(page, "note &amp; more"));
  // Nothing from the network: no absolute URL anywhere.
  CHECK(count(page, "http:") + count(page, "https:") + count(page, "//") == 0);
}

TEST_CASE("html report: calibrated fields render when present, and say so when absent") {
  html::ImageRow uncalibrated;
  uncalibrated.label = "a.png";
  uncalibrated.image = "a.png";
  uncalibrated.heat_map = "a_overlay.png";
  uncalibrated.score = 0.123456;
  uncalibrated.truly_anomalous = false;
  html::ImageRow calibrated = uncalibrated;
  calibrated.label = "b.png";
  calibrated.ground_truth = "b_truth.png";
  calibrated.predicted_mask = "b_mask.png";
  calibrated.normalized_score = 0.75;
  calibrated.anomalous_verdict = true;
  calibrated.truly_anomalous = true;
  html::ImageRow wrong = calibrated;
  wrong.label = "c.png";
  wrong.truly_anomalous = false;
  wrong.ground_truth.reset();
  html::Report r;
  r.sections.push_back({"bottle", {}, {uncalibrated, calibrated, wrong}});
  const std::string page = html::render_html(r);
  CHECK(test::contains(page, "0.1235"));
  CHECK(count(page, "not calibrated") == 2);  // a.png: predicted mask and verdict
  CHECK(test::contains(page, "src=\"b_mask.png\""));
  CHECK(test::contains(page, "normalized 0.750"));
  CHECK(count(page, "<span class=\"anomalous\">anomalous</span>") == 2);
  CHECK(count(page, "class=\"wrong\"") == 1);
  CHECK(test::contains(page, "(wrong: the image is normal)"));
  CHECK(count(page, ">normal</td>") == 2);  // the ground-truth cell of the normal images a and c
  CHECK(count(page, "<th>ground truth</th>") == 1);

  // Without labels or masks (as from detect) the section has no ground-truth column at all.
  html::ImageRow unlabelled = uncalibrated;
  unlabelled.truly_anomalous.reset();
  html::Report d;
  d.sections.push_back({"bottle", {}, {unlabelled}});
  d.tables.push_back({"", {"image", "score", "verdict"}, {{"a.png", "0.5", "not calibrated"}, {"b.png", "n/a", "normal"}}});
  const std::string detect_page = html::render_html(d);
  CHECK(count(detect_page, "ground truth") == 0);
  CHECK(count(detect_page, "no mask") == 0);
  CHECK(test::contains(detect_page, "<tr><td>a.png</td><td class=\"num\">0.5</td><td>not calibrated</td></tr>"));
  CHECK(test::contains(detect_page, "<tr><td>b.png</td><td class=\"num\">n/a</td><td>normal</td></tr>"));
}

TEST_CASE("html report: headless Chromium shows every image of a page built here") {
  const auto browser = test::find_browser();
  if (!browser) {
    MESSAGE(test::browser_missing_message());
    return;
  }
  test::TempDir tmp("test_html_report_page");
  const fs::path dir = tmp / "out";
  fs::create_directories(dir / "report" / "odd name #1");
  write_png((dir / "report" / "odd name #1" / "im&g.png").string(), solid(8, 6, 200, 30, 30));
  write_png((dir / "heat.png").string(), solid(4, 4, 30, 30, 200));
  html::ImageRow row;
  row.label = "im&g.png";
  row.image = "report/odd name #1/im&g.png";
  row.heat_map = "heat.png";
  row.predicted_mask = "heat.png";
  html::Report r;
  r.title = "check";
  r.sections.push_back({"c", {}, {row}});
  test::write_all(dir / "report.html", html::render_html(r));
  const test::PageCheck ok = test::check_page_in_browser(*browser, dir / "report.html", tmp.path());
  INFO(test::summary(ok));
  REQUIRE(ok.loaded);
  CHECK(ok.images == 3);
  CHECK(ok.broken.empty());
  CHECK(ok.errors.empty());
  CHECK(ok.external.empty());

  // The check can fail: a missing file is reported as broken and as an error event.
  row.heat_map = "missing.png";
  r.sections = {{"c", {}, {row}}};
  test::write_all(dir / "broken.html", html::render_html(r));
  const test::PageCheck bad = test::check_page_in_browser(*browser, dir / "broken.html", tmp.path());
  INFO(test::summary(bad));
  REQUIRE(bad.loaded);
  CHECK(bad.broken == std::vector<std::string>{"missing.png"});
  CHECK(bad.errors.size() == 1);
}
