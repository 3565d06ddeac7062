#include "runtime/roles.h"

#include <map>
#include <mutex>

namespace troupe::runtime {
namespace {
std::mutex& mutex() {
  static std::mutex m;
  return m;
}
std::map<std::string, RoleFactory>& registry() {
  static std::map<std::string, RoleFactory> r;
  return r;
}
}  // namespace

void register_role(const std::string& name, RoleFactory factory) {
  std::lock_guard lock(mutex());
  registry()[name] = std::move(factory);
}

const RoleFactory* find_role(const std::string& name) {
  std::lock_guard lock(mutex());
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : &it->second;
}

}  // namespace troupe::runtime
