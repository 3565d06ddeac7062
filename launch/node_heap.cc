#include "launch/node_heap.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace troupe::launch {

std::optional<std::string> node_heap_environment(const char* current) {
  const std::string_view now = current == nullptr ? std::string_view{} : current;
  // Each of node_heap_tunables' names ("glibc.malloc.x=" up to its '='): one the current
  // value already sets is the operator's choice.
  const std::string_view ours = node_heap_tunables;
  for (size_t at = 0; at < ours.size();) {
    const size_t end = std::min(ours.find(':', at), ours.size());
    const std::string_view name = ours.substr(at, ours.find('=', at) + 1 - at);
    if (now.find(name) != std::string_view::npos) return std::nullopt;
    at = end + 1;
  }
  if (now.empty()) return std::string(node_heap_tunables);
  return std::string(now) + ":" + node_heap_tunables;
}

void exec_with_node_heap(char** argv) {
  const char* before = std::getenv("GLIBC_TUNABLES");
  const std::optional<std::string> wanted = node_heap_environment(before);
  if (!wanted) return;
  const std::string restore = before == nullptr ? std::string{} : std::string(before);
  if (::setenv("GLIBC_TUNABLES", wanted->c_str(), 1) != 0) return;
  ::execv("/proc/self/exe", argv);
  const int err = errno;  // only reached when the exec failed
  if (before == nullptr)
    ::unsetenv("GLIBC_TUNABLES");
  else
    ::setenv("GLIBC_TUNABLES", restore.c_str(), 1);
  std::fprintf(stderr,
               "troupe node: warning: cannot execute /proc/self/exe again with GLIBC_TUNABLES=%s "
               "(%s): this node's heap stays in 4 KiB pages, so a kill -9 of it is seen later\n",
               wanted->c_str(), std::strerror(err));
}

}  // namespace troupe::launch
