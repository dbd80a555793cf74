#pragma once
// One CLIP fixture case (tests/fixtures/clip/<name>): its folder and manifest.json.
#include <filesystem>
#include <string>
#include <string_view>

#include "focuspatch/io/json.hpp"
#include "focuspatch/io/mapped_file.hpp"
#include "test_paths.hpp"

namespace focuspatch::test {

struct Case {
  std::string name;
  std::filesystem::path dir;
  json::Value manifest;
  int get(const char* key) const { return static_cast<int>(manifest.at(key).as_int64()); }
};

inline Case load_case(const std::string& name) {
  Case c;
  c.name = name;
  c.dir = fixtures_dir() / "clip" / name;
  MappedFile m((c.dir / "manifest.json").string());
  c.manifest = json::parse(std::string_view(reinterpret_cast<const char*>(m.bytes().data()), m.size()), m.path());
  return c;
}

}  // namespace focuspatch::test
