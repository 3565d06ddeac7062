// The job secret and the HMAC-SHA256 proofs of the join handshake (DESIGN §3 "Security").
// The router (router.h) runs the handshake; this file is the cryptography and the secret
// file, kept pure so tests check it against RFC 4231.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "runtime/status.h"

namespace troupe::runtime {

// One recorded handshake lets an attacker test guesses offline, so a secret needs the
// length of a real key (16 bytes = 128 bits when random); 4096 bytes is far more than any
// key and keeps a wrong --secret-file (a dataset, a binary) from being read whole.
inline constexpr size_t secret_bytes_min = 16;
inline constexpr size_t secret_bytes_max = 4096;
// Nonces are random, so 32 bytes make a repeat (a replayable challenge) impossible in practice.
inline constexpr size_t nonce_bytes = 32;
inline constexpr size_t mac_bytes = 32;  // SHA-256
// write_new_secret: 32 random bytes (256 bits), written as 64 hex characters.
inline constexpr size_t new_secret_random_bytes = 32;
static_assert(2 * new_secret_random_bytes >= secret_bytes_min);
static_assert(2 * new_secret_random_bytes <= secret_bytes_max);

// Reads the job secret (one trailing newline, or CRLF, stripped). Errors name the path and
// the fix: missing or unreadable (io_error), not a regular file, accessible by group or
// others ("chmod 600 PATH", as ssh requires of its keys), empty, shorter than
// secret_bytes_min or longer than secret_bytes_max (invalid_argument).
Result<std::string> load_secret(const std::string& path);

// Creates `path` (O_CREAT|O_EXCL, mode 0600) holding new_secret_random_bytes random bytes,
// hex-encoded, and a newline. Refuses to overwrite: an error if `path` exists.
Status write_new_secret(const std::string& path);

// nonce_bytes random bytes (binary) from OpenSSL's CSPRNG. Aborts the process, with a line
// on stderr, if the CSPRNG fails: a node without randomness must not take part in a job.
std::string make_nonce();

// HMAC-SHA256(key, data): mac_bytes bytes, binary.
std::string hmac_sha256(std::string_view key, std::string_view data);

// The proof that `node_name` knows the secret, bound to the peer's nonce:
// HMAC-SHA256(secret, "troupe-join-v1" ‖ u32le |nonce| ‖ nonce ‖ u32le |name| ‖ name).
// The domain tag keeps these MACs apart from any other use of the secret; the length
// prefixes keep fields from sliding into each other ("ab"+"c" vs "a"+"bc").
std::string join_mac(std::string_view secret, std::string_view nonce, std::string_view node_name);

// Constant-time check of a join_mac; false for a MAC of the wrong length.
bool join_mac_ok(std::string_view secret, std::string_view nonce, std::string_view node_name,
                 std::string_view mac);

}  // namespace troupe::runtime
