#pragma once
// What tests of the command-line programs share: a scratch folder and running a program.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

namespace focuspatch::test {

// A fresh folder under the system's temporary directory, removed with everything in it.
class TempDir {
 public:
  explicit TempDir(const std::string& tag)
      : path_(std::filesystem::temp_directory_path() / ("focuspatch_" + tag + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::string read_all(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

inline void write_all(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
}

struct ToolRun {
  int status;
  std::string output;  // stdout and stderr together
};

// Runs build/tools/<tool> with a shell-quoted argument string, capturing its output in `log`.
inline ToolRun run_tool(const std::string& tool, const std::string& arguments, const std::filesystem::path& log) {
  const std::string command =
      (std::filesystem::path(FOCUSPATCH_TOOLS_DIR) / tool).string() + " " + arguments + " > '" + log.string() + "' 2>&1";
  const int raw = std::system(command.c_str());
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, read_all(log)};
}

}  // namespace focuspatch::test
