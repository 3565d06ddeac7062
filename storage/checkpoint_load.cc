// load_checkpoint apart from the rest of checkpoint.h: it alone needs the Trainer's code,
// so a program that only checks identities or verifies checkpoints does not link it.
#include <fmt/format.h>

#include <stdexcept>

#include "storage/checkpoint.h"

namespace troupe::storage {

using runtime::Code;
using runtime::Status;

Status load_checkpoint(const std::string& run_dir, const Manifest& m, model::FlatRange owned,
                       model::Trainer* trainer) {
  CheckpointReader reader(checkpoint_dir(run_dir, m.step), m.step, m.shards);
  auto read = [&](const std::string& name, std::vector<float>* out) {
    if (Status s = reader.read(name, out); !s.ok()) throw std::runtime_error(s.message());
  };
  try {
    trainer->load_state(owned, read);
  } catch (const std::exception& e) {
    return Status(Code::io_error, fmt::format("cannot load the checkpoint of step {} from {}: {}",
                                              m.step, run_dir, e.what()));
  }
  return Status();
}

}  // namespace troupe::storage
