#pragma once
// Opening an input file safely. Every reader of a file named by a user comes through here, so one
// place decides what may be read:
//   - only regular files. A FIFO would block the open (and then the read) forever, /dev/zero or
//     /dev/urandom never end, a directory has no bytes; each is refused naming the path. The file
//     is opened non-blocking first, so even the open of a FIFO returns, and its type is read from
//     the open descriptor (no window between a check and the open for the path to change);
//   - a whole-file read is bounded: text inputs (prompt banks, split files, vocabularies, configs)
//     state how large they may plausibly be, and a larger file is refused naming it before its
//     bytes are allocated.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "focuspatch/core/error.hpp"

namespace focuspatch {

// An open descriptor that is closed when it goes out of scope.
class FileDescriptor {
 public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.release()) {}
  FileDescriptor& operator=(FileDescriptor&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  ~FileDescriptor() { reset(); }

  int get() const { return fd_; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

namespace detail {
inline const char* file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}
}  // namespace detail

struct RegularFile {
  FileDescriptor fd;
  std::uint64_t size = 0;
};

// Opens `path` for reading; throws, naming it, unless it is a regular file (symlinks are followed).
inline RegularFile open_regular_file(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY));
  if (fd.get() < 0) fail(path, ": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(path, ": cannot stat (", std::strerror(errno), ")");
  if (!S_ISREG(st.st_mode)) fail(path, ": is ", detail::file_type_name(st.st_mode), ", expected a regular file");
  // Regular files never block; clear the flag anyway so later reads behave as ordinary ones.
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return {std::move(fd), static_cast<std::uint64_t>(st.st_size)};
}

// The whole of a regular file, refused naming it (as `what`, e.g. "prompt bank") when larger than
// max_bytes. The bound is also enforced while reading, for files that grow or misreport their size.
inline std::string read_file_bounded(const std::string& path, std::uint64_t max_bytes, std::string_view what = "file") {
  RegularFile file = open_regular_file(path);
  auto too_large = [&](std::uint64_t n) {
    fail(path, ": ", what, " of ", n, " bytes is larger than the limit of ", max_bytes, " bytes; is this the right file?");
  };
  if (file.size > max_bytes) too_large(file.size);
  std::string out;
  out.reserve(static_cast<std::size_t>(file.size));
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(file.fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(path, ": read error (", std::strerror(errno), ")");
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes) too_large(out.size() + static_cast<std::size_t>(n));
    out.append(buffer, static_cast<std::size_t>(n));
  }
  return out;
}

}  // namespace focuspatch
