// The roles this binary knows. Each role's file registers its factory (runtime/roles.h);
// a new role adds a file here and one line to register_roles().
#pragma once

namespace troupe::actors {

void register_worker_role();

// Registers every role; call once at process start, before the node agent runs.
inline void register_roles() {
  register_worker_role();
}

}  // namespace troupe::actors
