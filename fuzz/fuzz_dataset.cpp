// libFuzzer target: see fuzz_targets.hpp, focuspatch::fuzz::dataset.
#include "fuzz_driver.hpp"

FOCUSPATCH_FUZZ_TARGET(dataset)
