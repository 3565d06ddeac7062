// The job secret and the HMAC-SHA256 proofs of the join handshake (DESIGN §3 "Security").
// The router (router.h) runs the handshake; this file is the cryptography and the secret
// file, kept pure so tests check it against RFC 4231.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "runtime/status.h"

namespace troupe::runtime {

inline constexpr size_t secret_bytes_min = 16;
inline constexpr size_t secret_bytes_max = 4096;
inline constexpr size_t nonce_bytes = 32;

// Reads the job secret (one trailing newline stripped). Errors name the path and the fix:
// missing or unreadable, empty, shorter than secret_bytes_min, longer than
// secret_bytes_max, or readable by group/others (chmod 600, as ssh requires of its keys).
Result<std::string> load_secret(const std::string& path);

// Creates `path` with mode 0600 holding 32 random bytes, hex-encoded. Refuses to overwrite.
Status write_new_secret(const std::string& path);

// nonce_bytes random bytes from the OS's CSPRNG (OpenSSL RAND_bytes).
std::string make_nonce();

// HMAC-SHA256(key, data): 32 bytes.
std::string hmac_sha256(std::string_view key, std::string_view data);

// The proof that `node_name` knows the secret, bound to the peer's nonce:
// HMAC-SHA256(secret, "troupe-join-v1" ‖ u32le |nonce| ‖ nonce ‖ u32le |name| ‖ name).
// Length prefixes keep fields from sliding into each other.
std::string join_mac(std::string_view secret, std::string_view nonce, std::string_view node_name);

// Constant-time check of a join_mac; false for a MAC of the wrong length.
bool join_mac_ok(std::string_view secret, std::string_view nonce, std::string_view node_name,
                 std::string_view mac);

}  // namespace troupe::runtime
