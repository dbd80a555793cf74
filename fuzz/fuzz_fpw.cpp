// libFuzzer target: see fuzz_targets.hpp, focuspatch::fuzz::fpw.
#include "fuzz_driver.hpp"

FOCUSPATCH_FUZZ_TARGET(fpw)
