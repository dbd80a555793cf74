#pragma once
// One exception type for every failure the library reports. Messages name the file (or input) and
// what is wrong with it, so a user reading only the message can act on it.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace focuspatch {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  return out.str();
}
}  // namespace detail

// Throws Error with the parts streamed together: fail(path, ": tensor '", name, "' is truncated").
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(detail::concat(std::forward<Parts>(parts)...));
}

// Cold-path check; the message parts are only formatted when the condition is false.
template <class... Parts>
void require(bool condition, Parts&&... parts) {
  if (!condition) fail(std::forward<Parts>(parts)...);
}

}  // namespace focuspatch
