#include "launch/node_exit.h"

#include "runtime/exit_status.h"

namespace troupe::launch {

namespace {

// The log file named last in the supervisor's name: "the node process of node-3.log".
std::string log_of(const std::string& name) {
  return name.substr(name.rfind(' ') + 1);
}

std::string describe(const ChildExit& e) {
  return e.describe() + (node_end(e) == NodeEnd::evicted ? ": evicted" : "");
}

}  // namespace

std::string node_process_name(const std::string& k) {
  return "the node process of node-" + k + ".log";
}

NodeEnd node_end(const ChildExit& e) {
  if (e.signal == 0 && e.exit_code == 0) return NodeEnd::left;
  if (e.signal == 0 && e.exit_code == runtime::exit_status_evicted) return NodeEnd::evicted;
  return NodeEnd::died;
}

std::string node_exit_text(const ChildExit& e, const std::string& id) {
  const std::string pid = " (pid " + std::to_string(e.pid) + ") exited (";
  if (id.empty()) return e.name + pid + describe(e) + ") before it joined";
  return id + pid + describe(e) + "; log " + log_of(e.name) + ")";
}

nlohmann::json node_exit_fields(const ChildExit& e, const std::string& id) {
  return {{"node", id},
          {"pid", e.pid},
          {"reason", describe(e)},
          {"exit_code", e.exit_code},
          {"signal", e.signal},
          {"evicted", node_end(e) == NodeEnd::evicted},
          {"log", log_of(e.name)}};
}

std::string chaos_kill_text(const std::string& id, const std::string& name, pid_t pid,
                            const std::string& when) {
  return "[chaos] kill -9 " + (id.empty() ? name : id) + " (pid " + std::to_string(pid) + ") " +
         when;
}

}  // namespace troupe::launch
