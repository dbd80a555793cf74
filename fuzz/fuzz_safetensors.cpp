// libFuzzer target: see fuzz_targets.hpp, focuspatch::fuzz::safetensors.
#include "fuzz_driver.hpp"

FOCUSPATCH_FUZZ_TARGET(safetensors)
