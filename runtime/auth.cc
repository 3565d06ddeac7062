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
#include <cstring>
#include <fstream>
#include <sstream>

namespace troupe::runtime {

Result<std::string> load_secret(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    return Status(Code::invalid_argument, fmt::format("secret file '{}': {}; create one with 32 "
                                                      "random bytes and chmod 600",
                                                      path, std::strerror(errno)));
  if (!S_ISREG(st.st_mode))
    return Status(Code::invalid_argument, fmt::format("secret file '{}' is not a file", path));
  if (st.st_mode & (S_IRWXG | S_IRWXO))
    return Status(Code::invalid_argument,
                  fmt::format("secret file '{}' is accessible by group or others (mode {:o}); "
                              "run: chmod 600 {}",
                              path, st.st_mode & 0777, path));
  if (size_t(st.st_size) > secret_bytes_max + 1)
    return Status(Code::invalid_argument,
                  fmt::format("secret file '{}' holds {} bytes, more than secret_bytes_max {}",
                              path, st.st_size, secret_bytes_max));
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) return Status(Code::io_error, fmt::format("secret file '{}' cannot be read", path));
  std::string secret = text.str();
  if (!secret.empty() && secret.back() == '\n') secret.pop_back();
  if (!secret.empty() && secret.back() == '\r') secret.pop_back();
  if (secret.size() < secret_bytes_min)
    return Status(Code::invalid_argument,
                  fmt::format("secret file '{}' holds {} bytes; a job secret needs at least {} "
                              "(e.g. head -c 32 /dev/urandom | xxd -p -c 64 > {})",
                              path, secret.size(), secret_bytes_min, path));
  if (secret.size() > secret_bytes_max)
    return Status(Code::invalid_argument,
                  fmt::format("secret file '{}' holds {} bytes, more than secret_bytes_max {}",
                              path, secret.size(), secret_bytes_max));
  return secret;
}

Status write_new_secret(const std::string& path) {
  unsigned char raw[32];
  if (RAND_bytes(raw, sizeof raw) != 1)
    return Status(Code::io_error, "RAND_bytes failed: no entropy for the job secret");
  std::string hex;
  for (unsigned char c : raw) hex += fmt::format("{:02x}", c);
  hex.push_back('\n');
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return Status(Code::io_error,
                  fmt::format("cannot create secret file '{}': {}", path, std::strerror(errno)));
  const bool ok = ::write(fd, hex.data(), hex.size()) == ssize_t(hex.size());
  ::close(fd);
  if (!ok) return Status(Code::io_error, fmt::format("cannot write secret file '{}'", path));
  return Status();
}

std::string make_nonce() {
  std::string nonce(nonce_bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), int(nonce.size())) != 1)
    throw std::runtime_error("RAND_bytes failed: cannot make a handshake nonce");
  return nonce;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

namespace {
void append_field(std::string& out, std::string_view field) {
  const uint32_t n = uint32_t(field.size());
  for (int i = 0; i < 4; ++i) out.push_back(char((n >> (8 * i)) & 0xff));
  out.append(field);
}
}  // namespace

std::string join_mac(std::string_view secret, std::string_view nonce, std::string_view node_name) {
  std::string msg = "troupe-join-v1";
  append_field(msg, nonce);
  append_field(msg, node_name);
  return hmac_sha256(secret, msg);
}

bool join_mac_ok(std::string_view secret, std::string_view nonce, std::string_view node_name,
                 std::string_view mac) {
  const std::string want = join_mac(secret, nonce, node_name);
  return mac.size() == want.size() && CRYPTO_memcmp(mac.data(), want.data(), want.size()) == 0;
}

}  // namespace troupe::runtime
