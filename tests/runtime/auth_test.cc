// The join handshake's cryptography (RFC 4231 vectors, a pinned join MAC, every rejection)
// and the secret file's checks, each error naming the path and the fix.
#include "runtime/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace troupe::runtime {
namespace {

std::string hex(std::string_view bytes) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::string repeat(int n, char c) {
  return std::string(size_t(n), c);
}

// RFC 4231 §4: the HMAC-SHA256 test cases 1-7 (case 5 is compared truncated to 128 bits).
TEST(Auth, HmacSha256Rfc4231) {
  std::string key4;
  for (int i = 1; i <= 25; ++i) key4.push_back(char(i));
  struct Case {
    std::string key, data, mac;
  };
  const Case cases[] = {
      {repeat(20, '\x0b'), "Hi There",
       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {"Jefe", "what do ya want for nothing?",
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {repeat(20, '\xaa'), repeat(50, '\xdd'),
       "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {key4, repeat(50, '\xcd'),
       "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {repeat(20, '\x0c'), "Test With Truncation", "a3b6167473100ee06e0c796c2955552b"},
      {repeat(131, '\xaa'), "Test Using Larger Than Block-Size Key - Hash Key First",
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {repeat(131, '\xaa'),
       "This is a test using a larger than block-size key and a larger than block-size data. "
       "The key needs to be hashed before being used by the HMAC algorithm.",
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  int n = 0;
  for (const Case& c : cases) {
    ++n;
    const std::string mac = hmac_sha256(c.key, c.data);
    EXPECT_EQ(mac.size(), mac_bytes);
    EXPECT_EQ(hex(mac).substr(0, c.mac.size()), c.mac) << "RFC 4231 test case " << n;
  }
}

TEST(Auth, HmacOfEmptyInputs) {
  // Python: hmac.new(b"", b"", hashlib.sha256).hexdigest()
  EXPECT_EQ(hex(hmac_sha256("", "")),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

const std::string secret = "0123456789abcdef0123456789abcdef";

// The wire format of the proof, pinned so that it cannot drift between versions. Python:
// hmac.new(secret, b"troupe-join-v1" + struct.pack("<I", 32) + bytes(range(32)) +
//          struct.pack("<I", 2) + b"n3", hashlib.sha256).hexdigest()
TEST(Auth, JoinMacKnownAnswer) {
  std::string nonce;
  for (int i = 0; i < 32; ++i) nonce.push_back(char(i));
  EXPECT_EQ(hex(join_mac(secret, nonce, "n3")),
            "d382ae9ace3feeed37349c80423326400969254f1f7c00c5b639f1118fc7e663");
}

TEST(Auth, JoinMacVerifiesAndRejects) {
  const std::string nonce = make_nonce();
  const std::string mac = join_mac(secret, nonce, "n1");
  ASSERT_EQ(mac.size(), mac_bytes);
  EXPECT_TRUE(join_mac_ok(secret, nonce, "n1", mac));

  std::string other_secret = secret;
  other_secret[0] ^= 1;
  EXPECT_FALSE(join_mac_ok(other_secret, nonce, "n1", mac)) << "wrong secret";
  std::string other_nonce = nonce;
  other_nonce[31] ^= 1;
  EXPECT_FALSE(join_mac_ok(secret, other_nonce, "n1", mac)) << "wrong nonce";
  EXPECT_FALSE(join_mac_ok(secret, nonce, "n2", mac)) << "wrong name";
  EXPECT_FALSE(join_mac_ok(secret, nonce, "n1", mac.substr(0, 31))) << "truncated";
  EXPECT_FALSE(join_mac_ok(secret, nonce, "n1", mac + "x")) << "too long";
  EXPECT_FALSE(join_mac_ok(secret, nonce, "n1", "")) << "empty";
  std::string flipped = mac;
  flipped[17] ^= 0x40;
  EXPECT_FALSE(join_mac_ok(secret, nonce, "n1", flipped)) << "one bit changed";
}

TEST(Auth, JoinMacFieldsCannotShift) {
  EXPECT_NE(join_mac(secret, "ab", "c"), join_mac(secret, "a", "bc"));
  EXPECT_NE(join_mac(secret, "", "abc"), join_mac(secret, "abc", ""));
  // Not a bare HMAC of the concatenation: the domain tag and prefixes are in.
  EXPECT_NE(join_mac(secret, "ab", "c"), hmac_sha256(secret, "abc"));
}

TEST(Auth, NoncesAreRandom) {
  const std::string a = make_nonce(), b = make_nonce();
  EXPECT_EQ(a.size(), nonce_bytes);
  EXPECT_EQ(b.size(), nonce_bytes);
  EXPECT_NE(a, b);
}

class SecretFile : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("troupe_auth_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Writes `text` to a new file with `mode` and returns its path.
  std::string file(const std::string& name, const std::string& text, mode_t mode = 0600) {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }

  // load_secret(path) must fail with `code` and a message holding each of `parts`.
  static void expect_error(const std::string& path, Code code,
                           std::initializer_list<std::string> parts) {
    const Result<std::string> r = load_secret(path);
    ASSERT_FALSE(r.ok()) << path << " loaded";
    EXPECT_EQ(r.status().code(), code) << r.status().message();
    for (const std::string& part : parts)
      EXPECT_NE(r.status().message().find(part), std::string::npos)
          << "'" << part << "' not in: " << r.status().message();
  }

  std::filesystem::path dir_;
};

TEST_F(SecretFile, Loads) {
  const std::string s16 = "0123456789abcdef";
  Result<std::string> r = load_secret(file("exact", s16));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value(), s16);
  r = load_secret(file("newline", secret + "\n"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value(), secret);  // the trailing newline is not part of the secret
  r = load_secret(file("crlf", secret + "\r\n"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value(), secret);
  r = load_secret(file("largest", repeat(int(secret_bytes_max), 's') + "\n"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value().size(), secret_bytes_max);
  r = load_secret(file("owner-only", secret, 0400));
  EXPECT_TRUE(r.ok()) << r.status().message();
}

TEST_F(SecretFile, Missing) {
  const std::string path = (dir_ / "nope").string();
  expect_error(path, Code::io_error, {path, "No such file or directory"});
}

TEST_F(SecretFile, NotARegularFile) {
  std::filesystem::create_directories(dir_ / "dir");
  ::chmod((dir_ / "dir").c_str(), 0700);
  const std::string path = (dir_ / "dir").string();
  expect_error(path, Code::invalid_argument, {path, "not a regular file"});
  const std::string fifo = (dir_ / "fifo").string();  // must not hang waiting for a writer
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_error(fifo, Code::invalid_argument, {fifo, "not a regular file"});
}

TEST_F(SecretFile, Empty) {
  const std::string path = file("empty", "");
  expect_error(path, Code::invalid_argument, {path, "empty"});
  expect_error(file("just-newline", "\n"), Code::invalid_argument, {"empty"});
}

TEST_F(SecretFile, TooShort) {
  const std::string path = file("short", repeat(int(secret_bytes_min) - 1, 'x') + "\n");
  expect_error(path, Code::invalid_argument, {path, "holds 15 bytes", "secret_bytes_min 16"});
}

TEST_F(SecretFile, TooLong) {
  const std::string path = file("long", repeat(int(secret_bytes_max) + 1, 'x'));
  expect_error(path, Code::invalid_argument, {path, "secret_bytes_max 4096"});
  expect_error(file("huge", repeat(1 << 20, 'x')), Code::invalid_argument, {"secret_bytes_max"});
}

TEST_F(SecretFile, GroupOrOthersMayNotAccessIt) {
  for (mode_t mode : {0644, 0640, 0604, 0660, 0601, 0610}) {
    const std::string path = file("open-" + std::to_string(mode), secret, mode);
    expect_error(path, Code::invalid_argument, {path, "chmod 600 " + path});
  }
}

TEST_F(SecretFile, WriteNewSecret) {
  const std::string path = (dir_ / "secret").string();
  const mode_t old_umask = ::umask(0277);  // would leave 0400: the file is 0600 anyway
  const Status st = write_new_secret(path);
  ::umask(old_umask);
  ASSERT_TRUE(st.ok()) << st.message();
  struct stat s {};
  ASSERT_EQ(::stat(path.c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 0777, 0600u);
  const Result<std::string> r = load_secret(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value().size(), 2 * new_secret_random_bytes);
  EXPECT_EQ(r.value().find_first_not_of("0123456789abcdef"), std::string::npos) << r.value();

  const Status again = write_new_secret(path);  // never overwrites
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.message().find(path), std::string::npos) << again.message();
  EXPECT_NE(again.message().find("already exists"), std::string::npos) << again.message();
  const Result<std::string> same = load_secret(path);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same.value(), r.value());

  const std::string other = (dir_ / "other").string();
  ASSERT_TRUE(write_new_secret(other).ok());
  EXPECT_NE(load_secret(other).value(), r.value());  // random, not a constant
}

TEST_F(SecretFile, WriteNewSecretIntoMissingDirectory) {
  const std::string path = (dir_ / "no-dir" / "secret").string();
  const Status st = write_new_secret(path);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::io_error);
  EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
}

}  // namespace
}  // namespace troupe::runtime
