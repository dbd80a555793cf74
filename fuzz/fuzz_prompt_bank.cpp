// libFuzzer target: see fuzz_targets.hpp, focuspatch::fuzz::prompt_bank.
#include "fuzz_driver.hpp"

FOCUSPATCH_FUZZ_TARGET(prompt_bank)
