// Errors as values across runtime/ boundaries: a small Status and Result<T>.
// No exceptions leave the runtime; a caller checks ok() and reads code()/message().
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <variant>

namespace troupe::runtime {

enum class Code : uint8_t {
  ok,
  invalid_argument,  // the caller passed something malformed (bad address, bad sizes)
  too_large,         // a limit in fabric.h was exceeded; the message names the limit
  unknown_peer,      // no such peer id on this fabric
  peer_down,         // the peer's endpoint failed (process died, connection lost)
  busy,              // a bounded queue stayed full past its wait; retry later
  timeout,           // nothing arrived within the caller's timeout
  io_error,          // UCX or the OS refused; the message carries their words
  closed,            // the fabric is shutting down
};

const char* code_name(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  bool ok() const { return code_ == Code::ok; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

 private:
  Code code_ = Code::ok;
  std::string message_;
};

// Either a T or a non-ok Status.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: implicit by design
  Result(Code code, std::string message) : v_(Status(code, std::move(message))) {}

  bool ok() const { return std::holds_alternative<T>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace troupe::runtime
