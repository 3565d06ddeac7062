#include "launch/control.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <variant>

#include "launch/commands.h"

namespace troupe::launch {

using nlohmann::json;

namespace {

constexpr const char* json_type = "application/json";
constexpr const char* metrics_type = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* html_type = "text/html; charset=utf-8";
// How much of a wrong value an error quotes back.
constexpr size_t quoted_value_chars_max = 64;

struct Route {
  const char* path;
  const char* method;
};
constexpr Route routes[] = {{"/", "GET"},
                            {"/status", "GET"},
                            {"/metrics", "GET"},
                            {"/history", "GET"},
                            {"/scale", "POST"},
                            {"/drain", "POST"},
                            {"/pause", "POST"},
                            {"/resume", "POST"},
                            {"/checkpoint", "POST"},
                            {"/engram/attach", "POST"},
                            {"/engram/detach", "POST"}};

runtime::HttpReply json_reply(int status, const json& body) {
  return {status, json_type, body.dump()};
}
runtime::HttpReply error_reply(int status, const std::string& message) {
  return json_reply(status, {{"error", message}});
}

std::string quoted(const json& value) {
  std::string text = value.dump();
  if (text.size() > quoted_value_chars_max) text = text.substr(0, quoted_value_chars_max) + "...";
  return std::string(value.type_name()) + " " + text;
}

// The body of a POST as a JSON object ({} when empty), or the 400 that says why not.
std::variant<json, runtime::HttpReply> body_object(const runtime::HttpRequest& req,
                                                   const char* want) {
  const std::string what = "POST " + req.target + ": ";
  if (req.body.find_first_not_of(" \t\r\n") == std::string::npos) return json::object();
  json body;
  try {
    body = json::parse(req.body);
  } catch (const json::parse_error& e) {
    return error_reply(400, what + "body is not JSON (" + e.what() + "); want " + want);
  }
  if (!body.is_object())
    return error_reply(400,
                       what + "body must be a JSON object like " + want + ", got " + quoted(body));
  return body;
}

runtime::HttpReply target_reply(const ControlReply& r) {
  if (r.status >= 200 && r.status < 300)
    return json_reply(r.status, {{"ok", true}, {"message", r.message}});
  const int status = r.status >= 400 && r.status < 600 ? r.status : 500;
  return json_reply(status, {{"ok", false}, {"error", r.message}});
}

runtime::HttpReply scale(const runtime::HttpRequest& req, ControlTarget& target,
                         int64_t max_nodes) {
  const char* want = "{\"nodes\": N}";
  auto parsed = body_object(req, want);
  if (auto* refused = std::get_if<runtime::HttpReply>(&parsed)) return *refused;
  const json& body = std::get<json>(parsed);
  if (!body.contains("nodes"))
    return error_reply(400, std::string("POST /scale: missing field \"nodes\"; want ") + want);
  const json& n = body["nodes"];
  if (!n.is_number_integer())
    return error_reply(400, "POST /scale: \"nodes\" must be an integer, got " + quoted(n));
  const bool is_unsigned = n.is_number_unsigned();
  const int64_t nodes =
      is_unsigned ? int64_t(std::min<uint64_t>(n.get<uint64_t>(), INT64_MAX)) : n.get<int64_t>();
  if (nodes < 1) return error_reply(400, "POST /scale: nodes must be at least 1, got " + n.dump());
  if (nodes > max_nodes)
    return error_reply(400, "POST /scale: nodes must be at most max_nodes " +
                                std::to_string(max_nodes) + ", got " + n.dump());
  return target_reply(target.scale(nodes));
}

runtime::HttpReply drain(const runtime::HttpRequest& req, ControlTarget& target) {
  const char* want = "{\"node\": \"NAME\"}";
  auto parsed = body_object(req, want);
  if (auto* refused = std::get_if<runtime::HttpReply>(&parsed)) return *refused;
  const json& body = std::get<json>(parsed);
  if (!body.contains("node"))
    return error_reply(400, std::string("POST /drain: missing field \"node\"; want ") + want);
  const json& node = body["node"];
  if (!node.is_string() || node.get<std::string>().empty() ||
      node.get<std::string>().size() > drain_node_name_bytes_max)
    return error_reply(400, "POST /drain: \"node\" must be a node name (a string of 1 to " +
                                std::to_string(drain_node_name_bytes_max) + " bytes), got " +
                                quoted(node));
  return target_reply(target.drain(node.get<std::string>()));
}

runtime::HttpReply engram_attach(const runtime::HttpRequest& req, ControlTarget& target) {
  const char* want = "{\"name\": \"NAME\", \"path\": \"FILE\"} (path optional)";
  auto parsed = body_object(req, want);
  if (auto* refused = std::get_if<runtime::HttpReply>(&parsed)) return *refused;
  const json& body = std::get<json>(parsed);
  if (!body.contains("name"))
    return error_reply(400,
                       std::string("POST /engram/attach: missing field \"name\"; want ") + want);
  for (const char* field : {"name", "path"})
    if (body.contains(field) && !body[field].is_string())
      return error_reply(400, std::string("POST /engram/attach: \"") + field +
                                  "\" must be a string, got " + quoted(body[field]));
  return target_reply(
      target.engram_attach(body["name"].get<std::string>(), body.value("path", std::string())));
}

// A POST that takes no arguments: an empty body or any JSON object.
runtime::HttpReply plain_post(const runtime::HttpRequest& req,
                              ControlReply (ControlTarget::*call)(), ControlTarget& target) {
  auto parsed = body_object(req, "{} or nothing");
  if (auto* refused = std::get_if<runtime::HttpReply>(&parsed)) return *refused;
  return target_reply((target.*call)());
}

runtime::HttpReply dispatch(const runtime::HttpRequest& req, ControlTarget& target,
                            int64_t max_nodes) {
  const std::string& p = req.target;
  if (p == "/") return {200, html_type, std::string(control_page_html())};
  if (p == "/status") return json_reply(200, target.status());
  if (p == "/metrics") return {200, metrics_type, target.metrics_text()};
  if (p == "/history") return json_reply(200, target.history());
  if (p == "/scale") return scale(req, target, max_nodes);
  if (p == "/drain") return drain(req, target);
  if (p == "/pause") return plain_post(req, &ControlTarget::pause, target);
  if (p == "/resume") return plain_post(req, &ControlTarget::resume, target);
  if (p == "/checkpoint") return plain_post(req, &ControlTarget::checkpoint, target);
  if (p == "/engram/attach") return engram_attach(req, target);
  if (p == "/engram/detach") return plain_post(req, &ControlTarget::engram_detach, target);
  return error_reply(500, "control: route " + p + " has no handler");  // `routes` and this differ
}

}  // namespace

runtime::HttpReply route_control(const runtime::HttpRequest& req, ControlTarget& target,
                                 int64_t max_nodes) {
  const Route* route = nullptr;
  std::string known;
  for (const Route& r : routes) {
    if (req.target == r.path) route = &r;
    known += std::string(known.empty() ? "" : ", ") + r.method + " " + r.path;
  }
  if (!route) return error_reply(404, "no route " + req.target + "; routes: " + known);
  if (req.method != route->method)
    return error_reply(405, req.target + " takes " + route->method + ", not " + req.method);
  try {
    return dispatch(req, target, max_nodes);
  } catch (const std::exception& e) {
    return error_reply(500, req.method + " " + req.target + " failed: " + e.what());
  }
}

void add_control_options(CLI::App* app, ControlOptions* options) {
  app->add_option("--control-host", options->host,
                  "address the control endpoint listens on (an IP address; 0.0.0.0 for all)")
      ->capture_default_str();
  app->add_option("--control-port", options->port,
                  "port of the control endpoint; 0 picks a free one (see RUN_DIR/control.json)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
}

namespace {

std::string random_token() {
  unsigned char raw[control_token_random_bytes];
  if (RAND_bytes(raw, int(sizeof raw)) != 1)
    throw RunFailed("control: OpenSSL RAND_bytes failed making the control token");
  static constexpr char hex[] = "0123456789abcdef";
  std::string token;
  for (const unsigned char c : raw) {
    token += hex[c >> 4];
    token += hex[c & 15];
  }
  return token;
}

// Writes dir/name as a whole or not at all: a new temporary file created with `mode` (so a
// token is never readable by others, not even for a moment), synced, renamed over dir/name.
void write_file_atomically(const std::string& dir, const std::string& name,
                           const std::string& content, mode_t mode) {
  const std::string path = dir + "/" + name;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const auto fail = [&](const std::string& what) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw RunFailed("control: cannot " + what + " " + path + ": " + std::strerror(err));
  };
  ::unlink(tmp.c_str());  // a leftover of a process with our pid that died mid-write
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) fail("create");
  // The umask may have taken bits away; this only restores them, never widens past `mode`.
  bool ok = ::fchmod(fd, mode) == 0;
  for (size_t done = 0; ok && done < content.size();) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) done += size_t(n);
  }
  ok = ok && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  errno = err;
  if (!ok) fail("write");
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename into");
}

// The address a client on this machine uses: a wildcard host is reached through loopback.
std::string client_address(const std::string& host, uint16_t port) {
  std::string h = host;
  if (h == "0.0.0.0") h = "127.0.0.1";
  if (h == "::" || h == "[::]") h = "::1";
  if (h.find(':') != std::string::npos && h.front() != '[') h = "[" + h + "]";
  return "http://" + h + ":" + std::to_string(port);
}

}  // namespace

ControlEndpoint::~ControlEndpoint() {
  stop();
}

void ControlEndpoint::start(const std::string& run_dir, const ControlOptions& options,
                            ControlTarget& target, int64_t max_nodes) {
  std::string token;
  if (options.keep_token) {
    std::ifstream in(run_dir + "/" + control_token_file);
    std::getline(in, token);
    if (token.size() != 2 * control_token_random_bytes) token.clear();  // none: a fresh one
  }
  start(run_dir, options.host, options.port, target, max_nodes, token);
}

void ControlEndpoint::start(const std::string& run_dir, const std::string& host, int port,
                            ControlTarget& target, int64_t max_nodes, const std::string& token) {
  if (server_) throw UsageError("control: the endpoint was started twice");
  if (max_nodes < 1)
    throw UsageError("control: max_nodes must be at least 1, got " + std::to_string(max_nodes));
  if (port < 0 || port > 65535)
    throw UsageError("control: --control-port must be 0 to 65535, got " + std::to_string(port));
  runtime::HttpServerOptions options;
  options.token = token.empty() ? random_token() : token;
  options.public_paths.assign(std::begin(control_public_paths), std::end(control_public_paths));
  auto server = std::make_unique<runtime::HttpServer>(options);
  const runtime::Status listening =
      server->start(host, uint16_t(port), [&target, max_nodes](const runtime::HttpRequest& r) {
        return route_control(r, target, max_nodes);
      });
  if (!listening.ok())
    throw UsageError("control: " + listening.message() + " (--control-host, --control-port)");
  address_ = client_address(host, server->port());
  token_ = options.token;
  run_dir_ = run_dir;
  server_ = std::move(server);
  try {
    write_file_atomically(run_dir, control_token_file, token_ + "\n", 0600);
    const json where = {{"address", address_}, {"pid", int64_t(::getpid())}};
    write_file_atomically(run_dir, control_json_file, where.dump() + "\n", 0644);
  } catch (const RunFailed&) {
    stop();
    throw;
  }
}

void ControlEndpoint::stop() {
  if (!server_) return;
  server_->stop();
  server_.reset();
  ::unlink((run_dir_ + "/" + control_json_file).c_str());  // first: clients look for it
  ::unlink((run_dir_ + "/" + control_token_file).c_str());
}

uint16_t ControlEndpoint::port() const {
  return server_ ? server_->port() : 0;
}

runtime::HttpCounters ControlEndpoint::counters() const {
  return server_ ? server_->counters() : runtime::HttpCounters{};
}

namespace {

std::string read_small_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw UsageError("cannot read " + path);
  return text.str();
}

}  // namespace

ControlAccess read_control_access(const std::string& run_dir) {
  namespace fs = std::filesystem;
  const std::string json_path = run_dir + "/" + control_json_file;
  const std::string token_path = run_dir + "/" + control_token_file;
  if (!fs::is_directory(run_dir)) throw UsageError("no run directory " + run_dir);
  if (!fs::exists(json_path) || !fs::exists(token_path))
    throw UsageError("no control endpoint in " + run_dir + ": is the job running?");
  const json where = json::parse(read_small_file(json_path), nullptr, false);
  if (!where.is_object() || !where.contains("address") || !where["address"].is_string())
    throw UsageError(json_path + " is not {\"address\": \"http://HOST:PORT\", ...}");
  ControlAccess access{where["address"].get<std::string>(), read_small_file(token_path)};
  while (!access.token.empty() && (access.token.back() == '\n' || access.token.back() == '\r'))
    access.token.pop_back();
  if (access.token.empty()) throw UsageError(token_path + " is empty");
  return access;
}

}  // namespace troupe::launch
