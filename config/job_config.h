#pragma once
// A job's whole configuration: the training sections (train/train_config.h) and the
// runtime's [fault_tolerance], as config/config_parse.h reads them from TOML and --set.
#include <map>
#include <string>

#include "runtime/fault_tolerance.h"
#include "train/train_config.h"

namespace troupe::model {

struct JobConfig : TrainJobConfig {
  runtime::FaultToleranceConfig fault_tolerance;  // [fault_tolerance]: noticing failures
  std::string source;                             // the file it was read from, for messages
  // Where each explicitly set key came from, for messages: "section.key" ->
  // "configs/x.toml:12" or "--set section.key=value". Keys absent here hold defaults.
  std::map<std::string, std::string> origins;

  // The settings alone (not source/origins): what determines the job's result.
  bool same_settings(const JobConfig& o) const {
    return model == o.model && data == o.data && train == o.train && optimizer == o.optimizer &&
           fp8 == o.fp8 && fault_tolerance == o.fault_tolerance;
  }
};

}  // namespace troupe::model
