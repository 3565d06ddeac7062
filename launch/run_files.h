#pragma once
// What `troupe train` and `troupe launch` write into a run directory, written one way.
#include <nlohmann/json.hpp>
#include <string>

#include "train/trainer.h"

namespace troupe::launch {

// One metrics.jsonl line, "\n" included. Losses are written with every bit (JSON doubles of
// the float values), so two runs' lines compare exactly.
inline std::string metrics_line(const model::StepStats& st, double tokens_per_s, double val_loss,
                                bool has_val) {
  nlohmann::json j = {{"step", st.step},
                      {"loss", st.loss},
                      {"ce", st.ce},
                      {"mtp", st.mtp},
                      {"bal", st.bal},
                      {"lr", st.lr},
                      {"grad_norm", st.grad_norm},
                      {"tokens_per_s", tokens_per_s}};
  if (has_val) j["val_loss"] = val_loss;
  return j.dump() + "\n";
}

}  // namespace troupe::launch
