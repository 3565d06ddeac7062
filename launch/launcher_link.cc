#include "launch/launcher_link.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace troupe::launch {

namespace {

sockaddr_un abstract_address(const std::string& name, socklen_t* len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  a.sun_path[0] = '\0';  // the abstract namespace
  std::memcpy(a.sun_path + 1, name.data(), std::min(name.size(), sizeof(a.sun_path) - 2));
  *len = socklen_t(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return a;
}

std::runtime_error os_error(const std::string& what) {
  return std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

LauncherLink::~LauncherLink() {
  if (fd_ >= 0) ::close(fd_);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

void LauncherLink::listen() {
  // Unique per process and start: the pid, and the clock for a reused pid.
  const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
  name_ = "troupe-launch-" + std::to_string(::getpid()) + "-" + std::to_string(t);
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw os_error("launch: cannot open the coordinator link");
  socklen_t len = 0;
  const sockaddr_un a = abstract_address(name_, &len);
  if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&a), len) != 0 ||
      ::listen(listen_fd_, 4) != 0)
    throw os_error("launch: cannot listen for the coordinator process");
}

void LauncherLink::connect(const std::string& name) {
  name_ = name;
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  socklen_t len = 0;
  const sockaddr_un a = abstract_address(name, &len);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<const sockaddr*>(&a), len) != 0)
    throw os_error("launch: cannot reach the launcher at @" + name);
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
}

void LauncherLink::poll(const std::function<void(const std::string&)>& on_line) {
  if (listen_fd_ >= 0) {
    const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c >= 0) {  // a (re)started coordinator: the last one's connection is over
      if (fd_ >= 0) ::close(fd_);
      fd_ = c;
      buffer_.clear();
    }
  }
  if (fd_ < 0) return;
  char chunk[4096];
  for (;;) {
    const ssize_t n = ::read(fd_, chunk, sizeof chunk);
    if (n > 0) {
      buffer_.append(chunk, size_t(n));
      continue;
    }
    if (n == 0) {  // the peer closed
      ::close(fd_);
      fd_ = -1;
    }
    break;
  }
  for (size_t nl; (nl = buffer_.find('\n')) != std::string::npos;) {
    const std::string line = buffer_.substr(0, nl);
    buffer_.erase(0, nl + 1);
    on_line(line);
  }
}

bool LauncherLink::send(const std::string& line) {
  if (fd_ < 0) return false;
  const std::string out = line + "\n";
  size_t at = 0;
  while (at < out.size()) {
    const ssize_t n = ::send(fd_, out.data() + at, out.size() - at, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;  // a few lines: spin briefly
    if (n <= 0) return false;
    at += size_t(n);
  }
  return true;
}

}  // namespace troupe::launch
