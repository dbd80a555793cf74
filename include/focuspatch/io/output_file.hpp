#pragma once
// Every file the library and its programs write goes through OutputFile, so that an output appears
// whole or not at all, and a failure to write it is an error naming it, never a success:
//   - the bytes go to a temporary file beside the destination (same folder, so the final rename
//     cannot cross file systems), named ".<name>.<pid>-<n>.partial": hidden, and unique, so two
//     processes writing the same output never write into each other's temporary file;
//   - every write, the fsync and the close are checked (a full disk often shows only at fsync or
//     close, on NFS only at close);
//   - commit() renames the finished file over the destination, atomically on POSIX file systems:
//     a reader sees the old file or the whole new one;
//   - an OutputFile destroyed without commit() (an exception on the way) removes its temporary.
// Destinations that are not regular files are refused rather than replaced: renaming over
// /dev/stdout (a symbolic link) would swap the link for a file.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "focuspatch/core/error.hpp"

namespace focuspatch {

class OutputFile {
 public:
  // Creates the temporary file; throws naming `path` when its folder is missing or unwritable, or
  // when `path` names something other than a regular file.
  explicit OutputFile(std::filesystem::path path) : path_(std::move(path)) {
    const std::string dest = path_.string();
    require(!dest.empty(), "output file: empty path");
    struct stat st {};
    if (::stat(dest.c_str(), &st) == 0) {
      require(!S_ISDIR(st.st_mode), dest, ": is a directory; cannot write a file there");
      require(S_ISREG(st.st_mode), dest, ": exists and is not a regular file; outputs are written as regular files");
    }
    const std::filesystem::path folder = path_.has_parent_path() ? path_.parent_path() : std::filesystem::path(".");
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0;; ++attempt) {
      // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on a chain of string operator+.
      std::string name = ".";
      name += path_.filename().string();
      name += '.';
      name += std::to_string(::getpid());
      name += '-';
      name += std::to_string(counter++);
      name += ".partial";
      temp_ = folder / name;
      fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0) break;
      if (errno != EEXIST || attempt > 100)
        fail(dest, ": cannot create the file (", std::strerror(errno), " for a temporary file in ", folder.string(), ")");
    }
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  ~OutputFile() { discard(); }

  const std::filesystem::path& path() const { return path_; }
  std::uint64_t size() const { return written_; }  // bytes appended so far

  // Appends bytes; throws naming the destination on any failure (the temporary is removed).
  void write(const void* data, std::size_t n) {
    write_fully(data, n, nullptr);
    written_ += n;
  }
  void write(std::string_view text) { write(text.data(), text.size()); }
  void write(std::span<const std::byte> bytes) { write(bytes.data(), bytes.size()); }

  // Overwrites n bytes already appended, starting at `offset` (a header patched once the data is
  // known); the end of the file is unchanged.
  void write_at(std::uint64_t offset, const void* data, std::size_t n) {
    require(offset <= written_ && n <= written_ - offset, path_.string(), ": internal error: patch of ", n, " bytes at ", offset,
            " lies past the ", written_, " bytes written");
    write_fully(data, n, &offset);
  }

  // Flushes the data to the disk, closes and renames the file into place. After commit() the
  // object owns nothing; a second commit() is an error.
  void commit() {
    require(fd_ >= 0, path_.string(), ": internal error: output committed twice or after a failure");
    if (::fsync(fd_) != 0) fail_io("cannot flush to disk");
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) fail_io("cannot close");
    if (std::rename(temp_.c_str(), path_.c_str()) != 0) fail_io("cannot move the finished file into place");
    temp_.clear();
  }

 private:
  void write_fully(const void* data, std::size_t n, const std::uint64_t* offset) {
    require(fd_ >= 0, path_.string(), ": internal error: write after commit or failure");
    const auto* p = static_cast<const char*>(data);
    std::uint64_t at = offset ? *offset : 0;
    while (n > 0) {
      // Kernels write at most about 2 GiB per call; larger requests come back short, and loop.
      const std::size_t chunk = std::min<std::size_t>(n, std::size_t{1} << 30);
      const ssize_t k = offset ? ::pwrite(fd_, p, chunk, static_cast<off_t>(at)) : ::write(fd_, p, chunk);
      if (k < 0 && errno == EINTR) continue;
      if (k < 0) fail_io("write failed");
      if (k == 0) {
        errno = ENOSPC;  // a zero-byte write of a non-empty buffer: no room
        fail_io("write failed");
      }
      p += k;
      n -= static_cast<std::size_t>(k);
      at += static_cast<std::uint64_t>(k);
    }
  }

  [[noreturn]] void fail_io(std::string_view what) {
    const int err = errno;
    discard();
    fail(path_.string(), ": ", what, " (", std::strerror(err), err == ENOSPC || err == EDQUOT ? "; is the disk full?" : "",
         "); nothing was written");
  }

  void discard() noexcept {
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    if (!temp_.empty()) ::unlink(temp_.c_str());
    temp_.clear();
  }

  std::filesystem::path path_;
  std::filesystem::path temp_;
  int fd_ = -1;
  std::uint64_t written_ = 0;
};

// Writes `contents` as the whole of `path`, whole or not at all (see OutputFile).
inline void write_file(const std::filesystem::path& path, std::string_view contents) {
  OutputFile out(path);
  out.write(contents);
  out.commit();
}

}  // namespace focuspatch
