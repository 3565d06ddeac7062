#pragma once
// Which complete checkpoint of a run directory an offline command reads (`troupe export
// --step`, `troupe engram export`): the one of --step, else the newest whose shards verify
// (storage::newest_good_checkpoint, its warnings on stderr). Errors are UsageErrors that
// start with `cmd` ("export", "engram export") and name the checkpoints there are.
#include <cstdint>
#include <string>

#include "storage/checkpoint.h"

namespace troupe::launch {

// step < 0: the newest good checkpoint. *source says which one it was, for the summary.
storage::Manifest chosen_checkpoint(const std::string& cmd, const std::string& run_dir,
                                    int64_t step, std::string* source);

}  // namespace troupe::launch
