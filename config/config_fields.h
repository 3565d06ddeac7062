#pragma once
// Inside config/: the key registry that config_parse.cc reads files, --set and JSON through,
// and that config_validate.cc checks values through. Every key of every section is one
// Field, named as its struct member, so a key and its field cannot drift apart.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/job_config.h"

namespace troupe::model::config_detail {

// A pointer to the field a key sets, one alternative per kind of value (the enums are the
// registries: their names are in model/config.h, optim/optim_config.h, config/job_config.h).
using FieldRef =
    std::variant<int64_t*, uint64_t*, double*, bool*, std::string*, std::vector<int64_t>*,
                 std::vector<double>*, Residual*, Ffn*, OptimizerKind*, ExpertsAt*, EngramAt*,
                 DataMode*, Schedule*, DataSource*, Recompute*>;

struct Field {
  std::string name;                         // the key inside its section
  std::function<FieldRef(JobConfig&)> ref;  // its field in a JobConfig
};

struct Section {
  std::string name;           // [name]
  std::vector<Field> fields;  // in the order config_to_toml writes them
};

// Every section, in file order.
const std::vector<Section>& sections();
// The section or key of that name; null if there is none.
const Section* find_section(std::string_view name);
const Field* find_field(const Section& s, std::string_view key);

// The value a FieldRef points to as TOML text (a string quoted, an enum by its name): what
// messages and config_to_toml write.
std::string value_text(const FieldRef& ref);

}  // namespace troupe::model::config_detail
