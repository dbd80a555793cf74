// focuspatch-synth: writes a small synthetic anomaly-detection dataset in MVTec AD's folder layout
// (see include/focuspatch/eval/synthetic_dataset.hpp), for tests and demos.
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"

namespace fs = std::filesystem;
using namespace focuspatch;

namespace {

constexpr int exit_usage = 2;

void print_usage(std::ostream& out) {
  const SyntheticDatasetOptions d;
  out << "usage: focuspatch-synth --out ROOT [options]\n"
         "\n"
         "Writes a synthetic anomaly-detection dataset in MVTec AD's layout:\n"
         "  ROOT/<category>/train/good/000.png, ROOT/<category>/test/{good,<defect>}/000.png,\n"
         "  ROOT/<category>/ground_truth/<defect>/000_mask.png, and ROOT/README.txt.\n"
         "\n"
         "options:\n"
         "  --out ROOT          folder to write (created if needed; must be empty unless --force)\n"
         "  --size N            image width and height in pixels, "
      << synthetic_min_image_size << " to " << synthetic_max_image_size << " (default " << d.image_size
      << ")\n"
         "  --train N           normal training images per category, 1 to "
      << synthetic_max_count << " (default " << d.train_good
      << ")\n"
         "  --test-good N       normal test images per category, 0 to "
      << synthetic_max_count << " (default " << d.test_good
      << ")\n"
         "  --test-defect N     test images per category and defect type, 0 to "
      << synthetic_max_count << " (default " << d.test_per_defect
      << ")\n"
         "  --seed S            random seed, 0 to 2^64-1 (default "
      << d.seed
      << "); the same seed gives the same images\n"
         "  --categories a,b    categories to write (default: all; see --list)\n"
         "  --force             write into a non-empty folder, first deleting the chosen categories'\n"
         "                      folders there so no stale images remain\n"
         "  --list              print the categories and defect types, then exit\n"
         "  --help              print this help, then exit\n";
}

void print_list() {
  std::cout << "categories:\n";
  for (const auto& c : synthetic_categories) std::cout << "  " << c.name << "  " << c.description << "\n";
  std::cout << "defect types (every category has all of them):\n";
  for (const auto& d : synthetic_defects) std::cout << "  " << d.name << "  " << d.description << "\n";
}

// A command-line mistake: reported with a pointer to --help and exit status 2.
struct UsageError {
  std::string message;
};

template <class T>
T parse_number(std::string_view option, std::string_view text, T lowest, T highest) {
  T value{};
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || (ec != std::errc() && ec != std::errc::result_out_of_range) || ptr != end)
    throw UsageError{std::string(option) + ": '" + std::string(text) + "' is not a whole number"};
  if (ec == std::errc::result_out_of_range || value < lowest || value > highest)
    throw UsageError{std::string(option) + ": " + std::string(text) + " is out of range (" + std::to_string(lowest) +
                     " to " + std::to_string(highest) + ")"};
  return value;
}

std::vector<std::string> parse_categories(std::string_view text) {
  std::vector<std::string> names;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    const std::string_view name = text.substr(start, comma == std::string_view::npos ? comma : comma - start);
    if (name.empty()) throw UsageError{"--categories: empty name in '" + std::string(text) + "'"};
    try {
      synthetic_category(name);
    } catch (const Error& e) {
      throw UsageError{std::string("--categories: ") + e.what()};
    }
    for (const auto& seen : names)
      if (seen == name) throw UsageError{"--categories: '" + std::string(name) + "' is listed twice"};
    names.emplace_back(name);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return names;
}

struct Arguments {
  SyntheticDatasetOptions options;
  std::string out;
  bool force = false;
  bool help = false;
  bool list = false;
};

Arguments parse_arguments(int argc, char** argv) {
  Arguments a;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    std::string_view value;
    bool has_value = false;
    if (const std::size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string_view::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    auto take_value = [&]() -> std::string_view {
      if (has_value) return value;
      if (i + 1 >= argc) throw UsageError{std::string(arg) + " needs a value"};
      return argv[++i];
    };
    auto no_value = [&] {
      if (has_value) throw UsageError{std::string(arg) + " takes no value"};
    };
    if (arg == "--help" || arg == "-h") {
      no_value();
      a.help = true;
    } else if (arg == "--list") {
      no_value();
      a.list = true;
    } else if (arg == "--force") {
      no_value();
      a.force = true;
    } else if (arg == "--out") {
      a.out = std::string(take_value());
      if (a.out.empty()) throw UsageError{"--out: the folder name is empty"};
    } else if (arg == "--size") {
      a.options.image_size = parse_number<int>(arg, take_value(), synthetic_min_image_size, synthetic_max_image_size);
    } else if (arg == "--train") {
      a.options.train_good = parse_number<int>(arg, take_value(), 1, synthetic_max_count);
    } else if (arg == "--test-good") {
      a.options.test_good = parse_number<int>(arg, take_value(), 0, synthetic_max_count);
    } else if (arg == "--test-defect") {
      a.options.test_per_defect = parse_number<int>(arg, take_value(), 0, synthetic_max_count);
    } else if (arg == "--seed") {
      a.options.seed =
          parse_number<std::uint64_t>(arg, take_value(), 0, std::numeric_limits<std::uint64_t>::max());
    } else if (arg == "--categories") {
      a.options.categories = parse_categories(take_value());
    } else {
      throw UsageError{"unknown argument '" + std::string(argv[i]) + "'"};
    }
  }
  if (!a.help && !a.list && a.out.empty()) throw UsageError{"--out ROOT is required"};
  return a;
}

// Refuses to mix a new dataset into existing files unless asked to, and then clears the folders it
// is about to fill, so that a smaller run over a larger one leaves no stale images behind.
void prepare_output(const Arguments& a) {
  const fs::path root(a.out);
  std::error_code ec;
  const fs::file_status st = fs::status(root, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) fail(a.out, ": cannot inspect (", ec.message(), ")");
  if (!fs::exists(st)) return;
  require(fs::is_directory(st), a.out, ": exists and is not a folder");
  const bool empty = fs::directory_iterator(root, ec) == fs::directory_iterator();
  require(!ec, a.out, ": cannot list (", ec.message(), ")");
  if (empty) return;
  if (!a.force) throw UsageError{a.out + ": folder exists and is not empty; pass --force to write into it"};
  for (const std::string& category : synthetic_selected_categories(a.options)) {
    fs::remove_all(root / category, ec);
    require(!ec, (root / category).string(), ": cannot remove the old category folder (", ec.message(), ")");
  }
}

void print_summary(const Arguments& a, const std::vector<SyntheticCategoryCounts>& summary) {
  std::printf("wrote %s (seed %llu, %dx%d px)\n", a.out.c_str(), static_cast<unsigned long long>(a.options.seed),
              a.options.image_size, a.options.image_size);
  std::printf("%-10s %11s %10s", "category", "train/good", "test/good");
  for (const auto& d : synthetic_defects) std::printf(" %8.*s", static_cast<int>(d.name.size()), d.name.data());
  std::printf("\n");
  int images = 0, masks = 0;
  for (const auto& c : summary) {
    std::printf("%-10s %11d %10d", c.category.c_str(), c.train_good, c.test_good);
    images += c.train_good + c.test_good;
    for (const auto& d : synthetic_defects) {
      int n = 0;
      for (const auto& [name, count] : c.test_defects)
        if (name == d.name) n = count;
      std::printf(" %8d", n);
      images += n;
      masks += n;
    }
    std::printf("\n");
  }
  std::printf("total: %d images and %d masks in %zu categories\n", images, masks, summary.size());
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Arguments a = parse_arguments(argc, argv);
    if (a.help) {
      print_usage(std::cout);
      return 0;
    }
    if (a.list) {
      print_list();
      return 0;
    }
    prepare_output(a);
    const auto summary = write_synthetic_dataset(a.out, a.options);
    print_summary(a, summary);
    return 0;
  } catch (const UsageError& e) {
    std::cerr << "focuspatch-synth: " << e.message << "\n(run focuspatch-synth --help for usage)\n";
    return exit_usage;
  } catch (const std::exception& e) {
    std::cerr << "focuspatch-synth: " << e.what() << "\n";
    return 1;
  }
}
