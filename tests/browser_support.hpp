#pragma once
// Opens an HTML page in headless Chromium and reports what a reader would see go wrong: images that
// did not load (naturalWidth 0), script or resource errors, and requests that left the machine.
//
// How: a copy of the page with a small script placed first in <head> is written beside it (so its
// relative links resolve the same way); the script records error events (resource errors in the
// capture phase) and, on the load event, writes its findings as JSON into a <pre> element that
// `chromium --dump-dom` prints. --virtual-time-budget lets the page finish loading before the dump.
// The browser is `chromium` (Debian's package; scripts/install-deps.sh installs it), or the program
// named by FOCUSPATCH_CHROMIUM; without one, callers skip with browser_missing_message().
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cli_support.hpp"
#include "focuspatch/io/json.hpp"

namespace focuspatch::test {

inline std::optional<std::string> find_browser() {
  if (const char* env = std::getenv("FOCUSPATCH_CHROMIUM"); env && *env) return std::string(env);
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"}) {
    const std::string probe = std::string("command -v ") + name + " > /dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) return std::string(name);
  }
  return std::nullopt;
}

inline std::string browser_missing_message() {
  return "skipped: no headless browser found (chromium, chromium-browser, google-chrome or $FOCUSPATCH_CHROMIUM); "
         "scripts/install-deps.sh installs Debian's chromium";
}

// The flags that keep a headless Chromium from touching the network or a user profile.
inline std::string browser_flags(const std::filesystem::path& profile) {
  return "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
         "--disable-component-update --disable-sync --user-data-dir='" + profile.string() + "'";
}

struct PageCheck {
  bool loaded = false;          // the check script ran to the end (the page parsed and loaded)
  std::size_t images = 0;       // <img> elements
  std::vector<std::string> broken;    // src of images that failed to load
  std::vector<std::string> errors;    // error events
  std::vector<std::string> external;  // resources fetched from anything but file:
  std::string log;              // the browser's output, for failure messages
};

inline constexpr const char* kPageCheckScript = R"(<script>
window.__fpErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__fpErrors.push(t && t !== window && t.tagName ? t.tagName + ' ' + (t.getAttribute('src') || t.getAttribute('href')) : String(e.message));
}, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !i.complete || i.naturalWidth === 0; }).map(function (i) { return i.getAttribute('src'); });
  var external = performance.getEntriesByType('resource').map(function (r) { return r.name; })
      .filter(function (n) { return n.indexOf('file:') !== 0 && n.indexOf('data:') !== 0; });
  var pre = document.createElement('pre');
  pre.id = 'focuspatch-page-check';
  pre.textContent = JSON.stringify({images: imgs.length, broken: broken, errors: window.__fpErrors, external: external});
  document.body.appendChild(pre);
});
</script>)";

// The text of a serialized text node: the serializer escapes &, < and > (and quotes in attributes).
inline std::string unescape_text(const std::string& s) {
  static const std::pair<std::string, char> entities[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}};
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    bool replaced = false;
    for (const auto& [entity, ch] : entities) {
      if (s.compare(i, entity.size(), entity) == 0) {
        out += ch;
        i += entity.size();
        replaced = true;
        break;
      }
    }
    if (!replaced) out += s[i++];
  }
  return out;
}

// `browser` from find_browser(); `scratch` a folder for the profile and the log.
inline PageCheck check_page_in_browser(const std::string& browser, const std::filesystem::path& page, const std::filesystem::path& scratch) {
  namespace fs = std::filesystem;
  PageCheck result;
  std::string html = read_all(page);
  const auto head = html.find("<head>");
  const std::size_t at = head == std::string::npos ? 0 : head + 6;
  html.insert(at, kPageCheckScript);
  const fs::path checked = page.parent_path() / ("focuspatch-check-" + page.filename().string());
  write_all(checked, html);
  const fs::path profile = scratch / "browser-profile";
  fs::create_directories(profile);
  const fs::path dom = scratch / "dom.html", log = scratch / "browser.log";
  const std::string command = "timeout 120 " + browser + " " + browser_flags(profile) + " --virtual-time-budget=10000 --dump-dom 'file://" +
                              fs::absolute(checked).string() + "' > '" + dom.string() + "' 2> '" + log.string() + "'";
  const int status = std::system(command.c_str());
  fs::remove(checked);
  result.log = "command: " + command + " (status " + std::to_string(status) + ")\n" + read_all(log);
  const std::string out = read_all(dom);
  const std::string open = "<pre id=\"focuspatch-page-check\">";
  const auto begin = out.find(open);
  const auto end = begin == std::string::npos ? std::string::npos : out.find("</pre>", begin);
  if (end == std::string::npos) return result;
  const std::string text = out.substr(begin + open.size(), end - begin - open.size());
  const json::Value v = json::parse(unescape_text(text), "page check");
  result.loaded = true;
  result.images = static_cast<std::size_t>(v.at("images").as_int64());
  for (const auto& s : v.at("broken").as_array()) result.broken.push_back(s.is_string() ? s.as_string() : "(no src)");
  for (const auto& s : v.at("errors").as_array()) result.errors.push_back(s.as_string());
  for (const auto& s : v.at("external").as_array()) result.external.push_back(s.as_string());
  return result;
}

// One line for a failure message: what was found, then the browser's own output.
inline std::string summary(const PageCheck& c) {
  std::string s = "loaded " + std::to_string(c.loaded) + ", images " + std::to_string(c.images) + ", broken:";
  for (const auto& b : c.broken) s += " " + b;
  s += ", errors:";
  for (const auto& e : c.errors) s += " " + e;
  s += ", external:";
  for (const auto& e : c.external) s += " " + e;
  return s + "\n" + c.log;
}

}  // namespace focuspatch::test
