#!/usr/bin/python3
"""`troupe status|scale|drain|pause|resume|checkpoint RUN_DIR` against a stand-in endpoint
(a Python HTTP server that checks the bearer token and answers like launch/control.h):
what each sends, what it prints (`status --page`: the page's URL with the token in its
fragment, once the job answered), and its exit status — 0 done, 1 refused or unreachable,
2 a usage error (no endpoint files, bad arguments). The real endpoint's routes are
tests/launch/control_test.cc; this is the commands around them.

  control_cli_test.py --troupe build/troupe --work DIR
"""
import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading

TOKEN = "ab" * 32
failures = []
received = []  # (method, path, body) of each authorized request


class StandIn(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode() if length else ""
        if self.headers.get("Authorization") != "Bearer " + TOKEN:
            return self.reply(401, {"error": "missing or wrong bearer token"})
        received.append((method, self.path, body))
        if self.path == "/status":
            return self.reply(200, {"step": 12, "nodes": ["n1", "n2"]})
        if self.path == "/drain" and json.loads(body)["node"] != "n2":
            return self.reply(400, {"ok": False, "error": "no node n7 in the job"})
        if self.path == "/checkpoint":
            return self.reply(500, {"error": "POST /checkpoint failed: disk full"})
        return self.reply(200, {"ok": True, "message": f"did {self.path[1:]}"})

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")


def run(troupe, *args):
    res = subprocess.run([troupe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=60)
    return res.returncode, res.stdout.strip(), res.stderr.strip()


def expect(name, got, status, out_has="", err_has="", sent=None):
    code, out, err = got
    ok = code == status and out_has in out and err_has in err
    ok = ok and "terminate called" not in err
    if sent is not None:
        ok = ok and received and received[-1] == sent
    print(f"{'ok ' if ok else 'BAD'} {name}: status {code}; out {out[:80]!r}; err {err!r}")
    if not ok:
        failures.append(f"{name}: wanted status {status}, stdout with {out_has!r}, stderr "
                        f"with {err_has!r}, sent {sent}; got {code}, {out!r}, {err!r}, "
                        f"last request {received[-1] if received else None}")


def write_endpoint_files(run_dir, port, token):
    with open(os.path.join(run_dir, "control.json"), "w") as f:
        json.dump({"address": f"http://127.0.0.1:{port}", "pid": os.getpid()}, f)
    with open(os.path.join(run_dir, "control.token"), "w") as f:
        f.write(token + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    run_dir = os.path.join(a.work, "run")
    os.makedirs(run_dir)
    t = a.troupe

    expect("no endpoint files", run(t, "status", run_dir), 2,
           err_has=f"no control endpoint in {run_dir}: is the job running?")
    expect("scale 0", run(t, "scale", run_dir, "0"), 2, err_has="at least 1")
    expect("scale without N", run(t, "scale", run_dir), 2, err_has="nodes")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    write_endpoint_files(run_dir, port, TOKEN)

    expect("status", run(t, "status", run_dir), 0, out_has='"step": 12',
           sent=("GET", "/status", ""))
    url = f"http://127.0.0.1:{port}/#token={TOKEN}"
    got = run(t, "status", run_dir, "--page")
    expect("status --page", got, 0, out_has=url, sent=("GET", "/status", ""))
    if got[1] != url:
        failures.append(f"status --page: wanted exactly {url!r} on stdout, got {got[1]!r}")
    expect("scale", run(t, "scale", run_dir, "3"), 0, out_has="did scale",
           sent=("POST", "/scale", '{"nodes":3}'))
    expect("drain", run(t, "drain", run_dir, "n2"), 0, out_has="did drain",
           sent=("POST", "/drain", '{"node":"n2"}'))
    expect("drain unknown node", run(t, "drain", run_dir, "n7"), 1,
           err_has="drain refused (HTTP 400): no node n7 in the job")
    expect("pause", run(t, "pause", run_dir), 0, out_has="did pause", sent=("POST", "/pause", ""))
    expect("resume", run(t, "resume", run_dir), 0, out_has="did resume",
           sent=("POST", "/resume", ""))
    expect("checkpoint fails", run(t, "checkpoint", run_dir), 1,
           err_has="checkpoint failed (HTTP 500): POST /checkpoint failed: disk full")

    count = len(received)
    write_endpoint_files(run_dir, port, "cd" * 32)
    expect("wrong token", run(t, "scale", run_dir, "2"), 1,
           err_has="scale refused (HTTP 401): missing or wrong bearer token")
    if len(received) != count:
        failures.append("a request with the wrong token reached the stand-in's routes")
    server.shutdown()
    server.server_close()
    expect("job gone", run(t, "status", run_dir, "--timeout-s", "5"), 1,
           err_has="is the job still running?")
    expect("job gone, --page", run(t, "status", run_dir, "--page", "--timeout-s", "5"), 1,
           err_has="is the job still running?")
    with open(os.path.join(run_dir, "control.json"), "w") as f:
        f.write("{not json")
    expect("bad control.json", run(t, "status", run_dir), 2, err_has="control.json")

    for f in failures:
        print("FAIL " + f)
    print(f"control_cli: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
