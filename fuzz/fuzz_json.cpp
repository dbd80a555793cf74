// libFuzzer target: see fuzz_targets.hpp, focuspatch::fuzz::json_document.
#include "fuzz_driver.hpp"

FOCUSPATCH_FUZZ_TARGET(json_document)
