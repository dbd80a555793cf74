// libFuzzer target: see fuzz_targets.hpp, focuspatch::fuzz::tokenizer.
#include "fuzz_driver.hpp"

FOCUSPATCH_FUZZ_TARGET(tokenizer)
