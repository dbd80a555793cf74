#pragma once
// --max-image-pixels, shared by every program that reads images: the decoder refuses images
// larger than a limit before allocating them (io/image.hpp), and a line-scan camera's legitimate
// frames can be larger than the default, so the user must be able to raise it.
#include <limits>

#include "common/cli_args.hpp"
#include "focuspatch/io/image.hpp"

namespace focuspatch::cli {

inline constexpr const char* kMaxImagePixelsOption = "max-image-pixels";

inline ImageLoadOptions image_load_options(const Args& args) {
  ImageLoadOptions options;
  options.max_pixels = args.get_int(kMaxImagePixelsOption, 1, std::numeric_limits<int>::max() * 64LL).value_or(options.max_pixels);
  return options;
}

}  // namespace focuspatch::cli
