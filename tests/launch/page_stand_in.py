"""A stand-in for a running job's control endpoint (launch/control.h), for
tests/launch/page_test.py: serves the built-in page at GET / without the token, and answers
/status, /history and the POSTs with the token like the real routes, over a pretend job whose
step advances 20 a second and whose scale takes effect a second after it was asked.
"""
import http.server
import json
import threading
import time

TOKEN = "cd" * 32


class Job:
    def __init__(self):
        self.lock = threading.Lock()
        self.started = time.time()
        self.nodes = ["n1", "n2"]
        self.scale_to, self.scale_at = None, 0.0
        self.paused = False
        self.events = [{"t_s": 0.0, "kind": "start", "text": "2 nodes", "step": 0},
                       {"t_s": 0.05, "kind": "note", "text": "<b>not bold</b>"},
                       {"t_s": 0.1, "kind": "checkpoint", "text": "step 4 written", "step": 4}]

    def now(self):
        return time.time() - self.started

    def step(self):
        return min(200, 5 + int(self.now() * 20))

    def tick(self):
        if self.scale_to is not None and time.time() >= self.scale_at:
            n = self.scale_to
            self.nodes = [f"n{k + 1}" for k in range(n)]
            self.events.append({"t_s": self.now(), "kind": "reshaped", "text": f"{n} nodes"})
            self.scale_to = None

    def status(self):
        self.tick()
        step = self.step()
        return {"phase": "running", "epoch": 1, "step": step, "committed_step": step - 1,
                "steps": 200, "paused": self.paused,
                "nodes": [{"id": n, "host": "127.0.0.1:4000" + n[1:], "pid": 100 + k,
                           "role": "worker", "worker": "", "state": "active",
                           "heartbeat_age_ms": 200} for k, n in enumerate(self.nodes)],
                "reshape": "" if self.scale_to is None else f"scale to {self.scale_to}",
                "recoveries": 0, "last_recovery": "", "last_reshape": "", "last_checkpoint": 4}

    def history(self):
        steps = []
        for s in range(1, self.step()):
            row = {"step": s, "loss": 4.0 - 0.01 * s, "tokens_per_s": 1000.0 + s, "t_s": s / 20}
            if s % 10 == 0:
                row["val_loss"] = 4.1 - 0.01 * s
            steps.append(row)
        return {"steps": steps, "events": self.events}

    def post(self, path, body):
        """(HTTP status, reply body) for a POST with its parsed body."""
        if path == "/scale":
            n = body.get("nodes")
            if not isinstance(n, int) or isinstance(n, bool):
                return 400, {"error": f"POST /scale: \"nodes\" must be an integer, got {n!r}"}
            if n < 1:
                return 400, {"error": f"POST /scale: nodes must be at least 1, got {n}"}
            self.scale_to, self.scale_at = n, time.time() + 1.0
            what = f"scaling {len(self.nodes)} → {n}"
            self.events.append({"t_s": self.now(), "kind": "scale_requested", "text": what})
            return 200, {"ok": True, "message": what}
        if path == "/drain":
            if body.get("node") not in self.nodes:
                return 400, {"ok": False, "error": f"no node {body.get('node')!r} in the job"}
            return 200, {"ok": True, "message": f"draining {body['node']}"}
        if path in ("/pause", "/resume"):
            self.paused = path == "/pause"
            return 200, {"ok": True, "message": "pausing" if self.paused else "resuming"}
        if path == "/checkpoint":
            return 500, {"error": "POST /checkpoint failed: disk full"}
        return 404, {"error": "no route " + path}


class StandIn:
    def __init__(self, page):
        job, received = Job(), []
        self.token, self.received = TOKEN, received

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body, content_type="application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def authorized(self):
                if self.headers.get("Authorization") == "Bearer " + TOKEN:
                    return True
                self.reply(401, {"error": "missing or wrong bearer token"})
                return False

            def do_GET(self):
                path = self.path.split("?")[0]
                if path == "/":
                    return self.reply(200, page, "text/html; charset=utf-8")
                if not self.authorized():
                    return
                with job.lock:
                    received.append(("GET", path, None))
                    if path == "/status":
                        return self.reply(200, job.status())
                    if path == "/history":
                        return self.reply(200, job.history())
                self.reply(404, {"error": "no route " + path})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length).decode() if length else ""
                if not self.authorized():
                    return
                body = json.loads(raw) if raw.strip() else {}
                with job.lock:
                    received.append(("POST", self.path, body))
                    status, reply = job.post(self.path, body)
                self.reply(status, reply)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
