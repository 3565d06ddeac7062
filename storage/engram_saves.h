#pragma once
// The versions of the table sets a job's swaps saved (docs/engram.md "Table sets"). Each SAVE
// writes a version of its own, <run dir>/engram/saved/<step>/<name>.safetensors (step: the
// commits before the swap), and <run dir>/engram/sets/<name>.safetensors is made a hard link
// to it: the newest copy of the name, what an attach by name reads. A detach loads the exact
// version its attach saved, so a set saved again later — by the same job before it was
// killed whole, say, when the resumed job replays the detach — cannot stand in for it.
#include <cstdint>
#include <string>

namespace troupe::storage {

std::string engram_saved_path(const std::string& run_dir, int64_t step, const std::string& name);

// Makes <run dir>/engram/sets/<name>.safetensors the version saved at `step` (a hard link
// renamed into place; a copy where the file system has no hard links). Throws
// std::runtime_error naming the paths.
void publish_engram_save(const std::string& run_dir, int64_t step, const std::string& name);

// A resume or rollback to the state before the swaps of `from_step`: the versions saved at
// from_step and later belong to a future that is gone. They are deleted, and a sets/<name>
// that was one of them is linked to the newest version left (or removed: no version of the
// name is left). An imported set (not one of them) stays. Throws std::runtime_error.
void drop_engram_saves_from(const std::string& run_dir, int64_t from_step);

// The versions no resume can need once `oldest_step` is the oldest step a job can go back to
// (its oldest kept checkpoint, or the committed step): of each name, those older than its
// newest version before oldest_step. Returns how many files were deleted.
int64_t prune_engram_saves(const std::string& run_dir, int64_t oldest_step);

}  // namespace troupe::storage
