#pragma once
// Command-line parsing shared by the focuspatch programs: "--name value" options, repeatable
// options, flags and positional arguments, with errors that say which argument is wrong.
#include <charconv>
#include <exception>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "focuspatch/core/error.hpp"

namespace focuspatch::cli {

class Args {
 public:
  // `valued`: options that take a value; `flags`: options that do not.
  Args(int argc, char** argv, std::set<std::string> valued, std::set<std::string> flags) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--") {
        for (++i; i < argc; ++i) positional_.push_back(argv[i]);
        break;
      }
      if (a.size() > 2 && a.rfind("--", 0) == 0) {
        std::string name = a.substr(2), value;
        const auto eq = name.find('=');
        const bool inline_value = eq != std::string::npos;
        if (inline_value) value = name.substr(eq + 1), name = name.substr(0, eq);
        if (flags.count(name)) {
          require(!inline_value, "option --", name, " takes no value");
          values_[name].push_back("");
        } else if (valued.count(name)) {
          if (!inline_value) {
            require(i + 1 < argc, "option --", name, " needs a value");
            value = argv[++i];
          }
          values_[name].push_back(value);
        } else {
          fail("unknown option '", a, "' (see --help)");
        }
      } else {
        positional_.push_back(a);
      }
    }
  }

  bool has(const std::string& name) const { return values_.count(name) != 0; }
  std::vector<std::string> all(const std::string& name) const {
    auto it = values_.find(name);
    return it == values_.end() ? std::vector<std::string>{} : it->second;
  }
  std::optional<std::string> get(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    require(it->second.size() == 1, "option --", name, " is given ", it->second.size(), " times");
    return it->second.front();
  }
  std::string get_or(const std::string& name, const std::string& fallback) const { return get(name).value_or(fallback); }
  std::optional<long long> get_int(const std::string& name, long long lo, long long hi) const {
    const auto v = get(name);
    if (!v) return std::nullopt;
    long long out = 0;
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
    require(ec == std::errc() && end == v->data() + v->size(), "option --", name, ": '", *v, "' is not an integer");
    require(out >= lo && out <= hi, "option --", name, ": ", out, " is outside ", lo, "..", hi);
    return out;
  }
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// A program's main: runs `run`, and turns any error into one line on stderr and exit status 1.
template <class Run>
int guarded_main(const char* program, int argc, char** argv, Run run) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << program << ": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace focuspatch::cli
