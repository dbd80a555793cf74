// libFuzzer target: see fuzz_targets.hpp, focuspatch::fuzz::torch.
#include "fuzz_driver.hpp"

FOCUSPATCH_FUZZ_TARGET(torch)
