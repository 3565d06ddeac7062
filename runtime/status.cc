#include "runtime/status.h"

#include <fmt/format.h>

namespace troupe::runtime {

const char* code_name(Code code) {
  switch (code) {
    case Code::ok:
      return "ok";
    case Code::invalid_argument:
      return "invalid_argument";
    case Code::too_large:
      return "too_large";
    case Code::unknown_peer:
      return "unknown_peer";
    case Code::peer_down:
      return "peer_down";
    case Code::busy:
      return "busy";
    case Code::timeout:
      return "timeout";
    case Code::io_error:
      return "io_error";
    case Code::closed:
      return "closed";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (message_.empty()) return code_name(code_);
  return fmt::format("{}: {}", code_name(code_), message_);
}

}  // namespace troupe::runtime
