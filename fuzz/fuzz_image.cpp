// libFuzzer target: see fuzz_targets.hpp, focuspatch::fuzz::image.
#include "fuzz_driver.hpp"

FOCUSPATCH_FUZZ_TARGET(image)
