#include "runtime/auth.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "runtime/log.h"

namespace troupe::runtime {

namespace {

constexpr std::string_view join_domain = "troupe-join-v1";

// Closes the descriptor it holds when it goes out of scope.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Status secret_error(Code code, const std::string& path, const std::string& what) {
  return Status(code, fmt::format("secret file '{}' {}", path, what));
}

// The whole file when it holds at most `limit` bytes; one byte more says it is too long.
Result<std::string> read_at_most(int fd, size_t limit, const std::string& path) {
  std::string text(limit + 1, '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return secret_error(Code::io_error, path,
                          "cannot be read: " + std::string(std::strerror(errno)));
    if (n == 0) break;
    got += size_t(n);
  }
  text.resize(got);
  return text;
}

void random_bytes(void* out, size_t n, const char* what) {
  if (RAND_bytes(static_cast<unsigned char*>(out), int(n)) != 1) {
    log::critical("OpenSSL RAND_bytes failed making {}", what);
    std::abort();
  }
}

void append_field(std::string& out, std::string_view field) {
  const auto n = uint32_t(field.size());
  for (int i = 0; i < 4; ++i) out.push_back(char((n >> (8 * i)) & 0xff));
  out.append(field);
}

}  // namespace

Result<std::string> load_secret(const std::string& path) {
  Fd f;  // O_NONBLOCK: a FIFO given by mistake fails the S_ISREG check instead of hanging
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (f.fd < 0)
    return secret_error(Code::io_error, path,
                        fmt::format("cannot be opened: {}; give the job's secret file (`troupe "
                                    "launch` creates RUN_DIR/secret)",
                                    std::strerror(errno)));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0)
    return secret_error(Code::io_error, path,
                        std::string("cannot be read: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return secret_error(Code::invalid_argument, path, "is not a regular file");
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
    return secret_error(Code::invalid_argument, path,
                        fmt::format("is accessible by group or others (mode {:03o}); the job "
                                    "secret must be private: run `chmod 600 {}`",
                                    st.st_mode & 0777, path));
  Result<std::string> text = read_at_most(f.fd, secret_bytes_max + 2, path);  // + CRLF
  if (!text.ok()) return text;
  std::string secret = std::move(text).value();
  if (!secret.empty() && secret.back() == '\n') secret.pop_back();
  if (!secret.empty() && secret.back() == '\r') secret.pop_back();
  if (secret.empty())
    return secret_error(Code::invalid_argument, path,
                        fmt::format("is empty; write a random secret into it, e.g. `head -c 32 "
                                    "/dev/urandom | xxd -p -c 64 > {}`",
                                    path));
  if (secret.size() < secret_bytes_min)
    return secret_error(Code::invalid_argument, path,
                        fmt::format("holds {} bytes, fewer than secret_bytes_min {}; use a "
                                    "random secret, e.g. `head -c 32 /dev/urandom | xxd -p -c "
                                    "64 > {}`",
                                    secret.size(), secret_bytes_min, path));
  if (secret.size() > secret_bytes_max)
    return secret_error(Code::invalid_argument, path,
                        fmt::format("holds more than secret_bytes_max {} bytes; is it the "
                                    "right file?",
                                    secret_bytes_max));
  return secret;
}

Status write_new_secret(const std::string& path) {
  unsigned char raw[new_secret_random_bytes];
  random_bytes(raw, sizeof raw, "a job secret");
  std::string hex;
  for (unsigned char c : raw) hex += fmt::format("{:02x}", c);
  hex.push_back('\n');
  Fd f;
  f.fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (f.fd < 0 && errno == EEXIST)
    return secret_error(Code::invalid_argument, path,
                        "already exists; a new secret never replaces one (remove it first, "
                        "and restart every node of its job)");
  if (f.fd < 0)
    return secret_error(Code::io_error, path,
                        std::string("cannot be created: ") + std::strerror(errno));
  // The umask may have taken bits away (0400 under umask 0277): make the mode exactly 0600.
  if (::fchmod(f.fd, 0600) != 0 || ::write(f.fd, hex.data(), hex.size()) != ssize_t(hex.size()) ||
      ::fsync(f.fd) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    return secret_error(Code::io_error, path,
                        std::string("cannot be written: ") + std::strerror(err));
  }
  return Status();
}

std::string make_nonce() {
  std::string nonce(nonce_bytes, '\0');
  random_bytes(nonce.data(), nonce.size(), "a handshake nonce");
  return nonce;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  static const unsigned char empty = 0;  // OpenSSL reads a null key as "no key given"
  const void* key_bytes = key.empty() ? &empty : static_cast<const void*>(key.data());
  const auto* data_bytes =
      data.empty() ? &empty : reinterpret_cast<const unsigned char*>(data.data());
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key_bytes, int(key.size()), data_bytes, data.size(), out, &len) ==
          nullptr ||
      len != mac_bytes) {
    log::critical("OpenSSL HMAC-SHA256 failed");
    std::abort();
  }
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string join_mac(std::string_view secret, std::string_view nonce, std::string_view node_name) {
  std::string msg(join_domain);
  append_field(msg, nonce);
  append_field(msg, node_name);
  return hmac_sha256(secret, msg);
}

bool join_mac_ok(std::string_view secret, std::string_view nonce, std::string_view node_name,
                 std::string_view mac) {
  if (mac.size() != mac_bytes) return false;
  const std::string want = join_mac(secret, nonce, node_name);
  return CRYPTO_memcmp(mac.data(), want.data(), mac_bytes) == 0;
}

}  // namespace troupe::runtime
