#pragma once
// Listing a folder of inputs (a dataset's image folders, a program's --image folder). Skipping an
// entry without a word would evaluate a category on fewer images than it has, or score fewer
// images than were given, so every entry is either listed or refused, naming it:
//   - a symbolic link is followed; one that loops or dangles (its type cannot be read) is refused;
//   - an entry that is neither a regular file nor a folder (a FIFO, socket or device) is refused;
//   - hidden entries (a name starting with '.') are left out before any of this when asked to:
//     editors' and file managers' droppings, and the ".<name>.partial" temporaries of
//     io/output_file.hpp.
#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "focuspatch/core/error.hpp"

namespace focuspatch {

struct DirectoryEntry {
  std::filesystem::path path;
  bool is_directory = false;  // else a regular file (links followed)
};

inline bool is_hidden_name(const std::filesystem::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// The entries of `dir`, sorted by path (generic form). Throws, naming the folder or the entry.
inline std::vector<DirectoryEntry> list_directory(const std::filesystem::path& dir, bool include_hidden) {
  namespace fs = std::filesystem;
  std::vector<DirectoryEntry> out;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  require(!ec, dir.string(), ": cannot list the folder (", ec.message(), ")");
  for (const fs::directory_iterator end; it != end; it.increment(ec)) {
    const fs::directory_entry& e = *it;
    if (!include_hidden && is_hidden_name(e.path())) continue;
    std::error_code type_ec;
    const fs::file_status st = e.status(type_ec);  // follows symbolic links
    require(!type_ec, e.path().string(), ": cannot tell what this entry is (", type_ec.message(),
            "); a broken or looping symbolic link? remove or fix it");
    const bool d = fs::is_directory(st);
    require(d || fs::is_regular_file(st), e.path().string(), ": is neither a file nor a folder (a FIFO, socket or device); remove it");
    out.push_back({e.path(), d});
  }
  require(!ec, dir.string(), ": cannot list the folder (", ec.message(), ")");
  std::sort(out.begin(), out.end(),
            [](const DirectoryEntry& a, const DirectoryEntry& b) { return a.path.generic_string() < b.path.generic_string(); });
  return out;
}

}  // namespace focuspatch
