// The control endpoint's clients (launch/control.h): `troupe status|scale|drain|pause|resume|
// checkpoint RUN_DIR ...` find a running job through RUN_DIR/control.json and control.token
// and send it one request. Exit 0 when it was done, 1 when the job refused it or could not
// be reached (its message printed), 2 on a usage error. `troupe engram attach|detach RUN_DIR`
// (issue 16) are clients of the same kind, added under `troupe engram`. `troupe status RUN_DIR
// --page` prints the URL of the operators' page instead of the status.
#include <cstdio>
#include <memory>

#include "launch/commands.h"
#include "launch/control.h"
#include "runtime/http_client.h"

namespace troupe::launch {

namespace {

using nlohmann::json;

struct ClientArgs {
  std::string run_dir;
  int64_t nodes = 0;
  std::string node;
  std::string set_name, set_path;  // engram attach
  bool page = false;               // status --page: print the page's URL instead
  double timeout_s = double(runtime::http_call_timeout_ms) / 1000;
};

runtime::HttpReply call_job(const ClientArgs& args, const std::string& method,
                            const std::string& target, const std::string& body) {
  const ControlAccess access = read_control_access(args.run_dir);
  const auto address = runtime::parse_http_address(access.address);
  if (!address.ok())
    throw UsageError(args.run_dir + "/" + control_json_file + ": " + address.status().message());
  runtime::HttpCall call;
  call.method = method;
  call.target = target;
  call.token = access.token;
  call.body = body;
  call.timeout_ms = int64_t(args.timeout_s * 1000);
  const auto reply = runtime::http_call(address.value(), call);
  if (!reply.ok())
    throw RunFailed(reply.status().message() + " (from " + args.run_dir + "/" + control_json_file +
                    "; is the job still running?)");
  return reply.value();
}

// The server's words: "message" or "error" of a JSON body, else the body itself.
std::string message_of(const runtime::HttpReply& reply) {
  const json body = json::parse(reply.body, nullptr, false);
  if (body.is_object() && body.contains("message") && body["message"].is_string())
    return body["message"].get<std::string>();
  if (body.is_object() && body.contains("error") && body["error"].is_string())
    return body["error"].get<std::string>();
  return reply.body;
}

void expect_ok(const runtime::HttpReply& reply, const std::string& what) {
  if (reply.status == 200) return;
  const char* outcome = reply.status >= 500 ? " failed" : " refused";
  throw RunFailed(what + outcome + " (HTTP " + std::to_string(reply.status) +
                  "): " + message_of(reply));
}

// With --page, the URL of the operators' page (GET /) with the token in its fragment, once
// the job answered: a browser never sends the fragment, so it reaches neither server nor logs.
void run_status(const ClientArgs& args) {
  const runtime::HttpReply reply = call_job(args, "GET", "/status", "");
  expect_ok(reply, "status");
  if (args.page) {
    const ControlAccess access = read_control_access(args.run_dir);
    std::printf("%s/#token=%s\n", access.address.c_str(), access.token.c_str());
    return;
  }
  const json body = json::parse(reply.body, nullptr, false);
  std::printf("%s\n", body.is_discarded() ? reply.body.c_str() : body.dump(2).c_str());
}

void run_post(const ClientArgs& args, const std::string& target, const json& body) {
  const runtime::HttpReply reply =
      call_job(args, "POST", target, body.is_null() ? "" : body.dump());
  expect_ok(reply, target.substr(1));
  std::printf("%s\n", message_of(reply).c_str());
}

CLI::App* add_client(CLI::App& app, const char* name, const char* help,
                     const std::shared_ptr<ClientArgs>& args) {
  CLI::App* cmd = app.add_subcommand(name, help);
  cmd->add_option("dir", args->run_dir, "run directory of a running `troupe launch`")->required();
  cmd->add_option("--timeout-s", args->timeout_s, "give up after this many seconds")
      ->check(CLI::Range(0.1, 3600.0))
      ->capture_default_str();
  return cmd;
}

}  // namespace

void add_control_commands(CLI::App& app) {
  auto args = std::make_shared<ClientArgs>();
  CLI::App* status = add_client(app, "status", "print a running job's status (JSON)", args);
  status->add_flag("--page", args->page,
                   "print the URL of the job's live page (with its token) instead");
  status->callback([args] { run_status(*args); });
  CLI::App* scale = add_client(app, "scale", "ask a running job to train on N nodes", args);
  scale->add_option("nodes", args->nodes, "node count")->required()->check(at_least(1, "nodes"));
  scale->callback([args] { run_post(*args, "/scale", {{"nodes", args->nodes}}); });
  CLI::App* drain = add_client(app, "drain", "ask a running job to take a node out", args);
  drain->add_option("node", args->node, "node name, as in `troupe status` (e.g. n2)")->required();
  drain->callback([args] { run_post(*args, "/drain", {{"node", args->node}}); });
  add_client(app, "pause", "ask a running job to pause training", args)->callback([args] {
    run_post(*args, "/pause", nullptr);
  });
  add_client(app, "resume", "ask a paused job to train again", args)->callback([args] {
    run_post(*args, "/resume", nullptr);
  });
  add_client(app, "checkpoint", "ask a running job to write a checkpoint now", args)
      ->callback([args] { run_post(*args, "/checkpoint", nullptr); });
}

void add_engram_control_commands(CLI::App& engram) {
  auto args = std::make_shared<ClientArgs>();
  CLI::App* attach = add_client(
      engram, "attach",
      "ask a running job to use a table set between two steps (POST /engram/attach)", args);
  attach->add_option("name", args->set_name, "the set's name (\"initial\": the job's own)")
      ->required();
  attach->add_option("--path", args->set_path,
                     "the set's file (default: RUN_DIR/engram/sets/NAME.safetensors)");
  attach->callback([args] {
    json body = {{"name", args->set_name}};
    if (!args->set_path.empty()) body["path"] = args->set_path;
    run_post(*args, "/engram/attach", body);
  });
  add_client(engram, "detach",
             "ask a running job to go back to the table set it had before its last attach", args)
      ->callback([args] { run_post(*args, "/engram/detach", nullptr); });
}

}  // namespace troupe::launch
