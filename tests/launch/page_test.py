#!/usr/bin/python3
"""The operators' page (GET /, launch/page/index.html) in headless Chromium, driven over the
DevTools protocol with the standard library only (a small WebSocket client below).

Two parts, each with its own run of the page:
  stand-in  a Python endpoint that serves the built-in page (`troupe dev page`) and answers
            /status, /history and the POSTs like launch/control.h, with the token check: the
            page's every field, curve, timeline and button, and its refusals shown.
  live      `troupe launch --config configs/tiny.toml --nodes 2 --control-port 0`: the page at
            the URL `troupe status RUN_DIR --page` prints shows the job's step advancing and its
            nodes; a scale to 3 issued from the page's control takes effect; a request without
            the token is refused (the page's banner, and a direct fetch).

  page_test.py --troupe build/troupe --work DIR [--part stand-in|live|all]

Skips (exit 77) only when there is no Chromium; setup.sh installs it.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from page_stand_in import StandIn

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))
SKIP = 77
UNAUTHORIZED = "unauthorized: open the URL that `troupe status RUN_DIR --page` prints"
failures = []


class CheckFailed(Exception):
    pass


# ---- a WebSocket client (RFC 6455), just enough for the DevTools protocol -----------------


class WebSocket:
    GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url, timeout_s=30):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CheckFailed("DevTools closed the WebSocket handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        if b" 101 " not in head.split(b"\r\n")[0] or accept.encode() not in head:
            raise CheckFailed(f"DevTools refused the WebSocket: {head[:200]!r}")

    def _exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise CheckFailed("DevTools closed the WebSocket")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode, payload):
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)  # a client masks every frame
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def recv(self):
        """The next whole text message (continuation frames joined; pings answered)."""
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._exact(8))[0]
            mask = self._exact(4) if b1 & 0x80 else None
            payload = self._exact(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise CheckFailed("DevTools closed the WebSocket")
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def close(self):
        self.sock.close()


# ---- Chromium ---------------------------------------------------------------------------


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Headless Chromium with one tab, driven through the DevTools protocol."""

    def __init__(self, exe, work):
        profile = os.path.join(work, "chromium-profile")
        shutil.rmtree(profile, ignore_errors=True)
        os.makedirs(profile)
        self.log = open(os.path.join(work, "chromium.log"), "w")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--window-size=1280,1400",
             f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if self.proc.poll() is not None or time.time() > deadline:
                raise CheckFailed(f"Chromium did not start (see {self.log.name})")
            time.sleep(0.05)
        port = int(open(port_file).read().split("\n")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            tabs = [t for t in json.load(r) if t.get("type") == "page"]
        if not tabs:
            raise CheckFailed("Chromium has no tab to drive")
        self.ws = WebSocket(tabs[0]["webSocketDebuggerUrl"])
        self.next_id = 0

    def command(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:  # anything else is an event: not asked for
                if "error" in reply:
                    raise CheckFailed(f"DevTools {method}: {reply['error']}")
                return reply["result"]

    def eval(self, expression):
        """The value of a JavaScript expression in the tab (a promise is awaited)."""
        r = self.command("Runtime.evaluate", expression=expression, returnByValue=True,
                         awaitPromise=True)
        if "exceptionDetails" in r:
            raise CheckFailed(f"page script {expression[:60]!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url):
        """A fresh load of url (through about:blank, so a new fragment reloads too)."""
        for target in ("about:blank", url):
            self.command("Page.navigate", url=target)
            self.wait(f"location.href === {json.dumps(target)} || "
                      f"location.href.split('#')[0] === {json.dumps(target.split('#')[0])}",
                      f"navigating to {target}", timeout_s=10)
        self.wait("document.readyState === 'complete'", "the page loading", timeout_s=10)

    def wait(self, expression, what, timeout_s=20):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            try:
                value = self.eval(expression)
            except CheckFailed:  # between two documents while navigating: ask again
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise CheckFailed(f"timed out after {timeout_s} s waiting for {what} "
                          f"({expression[:100]}); the page: {self.state()}")

    def text(self, element_id):
        return self.eval(f"document.getElementById({json.dumps(element_id)}).textContent")

    def state(self):
        return self.eval("JSON.stringify(['banner', 'step', 'node-count', 'answer', 'updated']"
                         ".map(id => id + ': ' + document.getElementById(id).textContent))")

    def close(self):
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.log.close()


# ---- what both parts check --------------------------------------------------------------


def check(name, ok, detail=""):
    print(f"{'ok ' if ok else 'BAD'} {name}" + (f": {detail}" if detail else ""))
    if not ok:
        failures.append(f"{name}: {detail}")


def direct_status(address, token):
    """GET /status outside the browser: (HTTP status, body)."""
    req = urllib.request.Request(address + "/status")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def check_refusals(b, address, token):
    """Without the token (no fragment, or a wrong one) the page says so; so does the server."""
    b.open(address + "/")
    b.wait("document.getElementById('banner').textContent.includes('unauthorized')",
           "the unauthorized banner without a token")
    check("no token: the banner", b.text("banner") == UNAUTHORIZED, b.text("banner"))
    b.open(address + "/#token=" + "0" * len(token))
    b.wait("document.getElementById('banner').textContent.includes('unauthorized')",
           "the unauthorized banner with a wrong token")
    check("wrong token: the banner after the 401", b.text("banner") == UNAUTHORIZED,
          b.text("banner"))
    code = b.eval("fetch('/status').then(r => r.status)")
    check("the page's fetch without the token is 401", code == 401, f"HTTP {code}")
    code, body = direct_status(address, "")
    check("a direct GET /status without the token is 401", code == 401, f"HTTP {code} {body}")
    code, _ = direct_status(address, "0" * len(token))
    check("a direct GET /status with a wrong token is 401", code == 401, f"HTTP {code}")


def node_ids(b):
    return b.eval("[...document.querySelectorAll('#nodes tr')].map(r => r.dataset.node)")


def step_of(b):
    text = b.text("step").split("/")[0].strip()
    return int(text) if text.isdigit() else -1


def open_with_token(b, url):
    """The page at its URL with the token: it loads, polls and takes the token out of sight."""
    b.open(url)
    b.wait("/^\\d+ \\/ \\d+$/.test(document.getElementById('step').textContent)",
           "the first status on the page")
    check("the token left the address bar", "token=" not in b.eval("location.href"),
          b.eval("location.href"))
    check("no banner with the token", "hidden" in b.eval(
        "document.getElementById('banner').className"), b.text("banner"))


def click(b, selector, path):
    """Clicks a control; the job's answer to it, as the page shows it."""
    b.eval("document.getElementById('answer').textContent = ''")
    b.eval(f"document.querySelector({json.dumps(selector)}).click()")
    return b.wait(f"(t => t.startsWith({json.dumps('POST ' + path + ': ')}) ? t : '')"
                  "(document.getElementById('answer').textContent)", f"the answer to {path}")


def click_scale(b, nodes):
    b.eval(f"document.getElementById('scale-n').value = '{nodes}'")
    return click(b, "#scale-go", "/scale")


def screenshot(b, path):
    data = b.command("Page.captureScreenshot", format="png")["data"]
    with open(path, "wb") as f:
        f.write(base64.b64decode(data))


# ---- the parts --------------------------------------------------------------------------


def part_stand_in(b, troupe, work):
    page = subprocess.run([troupe, "dev", "page"], stdout=subprocess.PIPE, check=True).stdout
    with open(os.path.join(SOURCE, "launch", "page", "index.html"), "rb") as f:
        check("troupe dev page is launch/page/index.html", page == f.read())
    stand_in = StandIn(page)
    try:
        check_refusals(b, stand_in.address, stand_in.token)
        open_with_token(b, stand_in.address + "/#token=" + stand_in.token)
        first = step_of(b)
        b.wait(f"parseInt(document.getElementById('step').textContent) > {first}",
               "the step advancing")
        check("status fields", b.text("phase") == "running" and b.text("epoch") == "1"
              and b.text("last-checkpoint") == "step 4" and b.text("paused") == "no",
              b.state())
        check("node rows", node_ids(b) == ["n1", "n2"], node_ids(b))
        check("heartbeat age in seconds", "0.2 s" in b.eval(
            "document.querySelector('#nodes tr').textContent"))
        b.wait("document.querySelectorAll('#loss-chart polyline.loss').length == 1 && "
               "document.querySelectorAll('#tps-chart polyline.tokens_per_s').length == 1 && "
               "document.querySelectorAll('#loss-chart polyline.val_loss').length == 1",
               "the loss, val_loss and tokens/s curves")
        kinds = b.eval("[...document.querySelectorAll('#events .kind')].map(e => e.textContent)")
        check("the timeline, newest first", kinds[:1] == ["checkpoint"] and kinds[-1] == "start",
              kinds)
        check("an event's text is text, not HTML", b.eval(
            "document.querySelectorAll('#events b').length") == 0 and "<b>" in b.text("events"))
        answer = click_scale(b, 3)
        check("scale from the page: the answer", "POST /scale: ok: scaling 2 → 3" in answer,
              answer)
        b.wait("document.getElementById('node-count').textContent === '3'", "3 nodes")
        check("scale from the page: the stand-in got it",
              ("POST", "/scale", {"nodes": 3}) in stand_in.received, stand_in.received[-3:])
        answer = click_scale(b, 0)
        check("scale 0: the 400's words", "HTTP 400: POST /scale: nodes must be at least 1"
              in answer, answer)
        answer = click(b, "button.drain[data-node=n3]", "/drain")
        check("drain from its row", answer == "POST /drain: ok: draining n3", answer)
        check("the drain named its row's node",
              stand_in.received[-1] == ("POST", "/drain", {"node": "n3"}), stand_in.received[-1])
        for button, said in (("pause", "ok: pausing"), ("resume", "ok: resuming"),
                             ("checkpoint", "HTTP 500: POST /checkpoint failed: disk full")):
            answer = click(b, "#" + button, "/" + button)
            check(f"{button} from the page", answer == f"POST /{button}: {said}", answer)
        b.wait("document.getElementById('paused').textContent === 'no'", "resumed")
        screenshot(b, os.path.join(work, "page-stand-in.png"))
    finally:
        stand_in.close()


def wait_for_files(run_dir, job, log_path, timeout_s=60):
    deadline = time.time() + timeout_s
    while not all(os.path.exists(os.path.join(run_dir, f))
                  for f in ("control.json", "control.token")):
        if job.poll() is not None:
            with open(log_path, errors="replace") as f:
                last = f.read().strip().splitlines()[-1:] or ["(nothing)"]
            raise CheckFailed(f"troupe launch exited ({job.returncode}) before its control "
                              f"endpoint was up, saying {last[0]!r} (see {log_path})")
        if time.time() > deadline:
            raise CheckFailed(f"no control.json/control.token in {run_dir} after {timeout_s} s")
        time.sleep(0.1)


def part_live(b, troupe, work, steps):
    run_dir = os.path.join(work, "live")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    log_path = os.path.join(work, "live-launch.log")
    log = open(log_path, "w")
    job = subprocess.Popen([troupe, "launch", "--config", os.path.join(SOURCE, "configs/tiny.toml"),
                            "--nodes", "2", "--run-dir", run_dir, "--steps", str(steps),
                            "--control-port", "0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_files(run_dir, job, log_path)
        url = subprocess.run([troupe, "status", run_dir, "--page"], stdout=subprocess.PIPE,
                             text=True, check=True, timeout=30).stdout.strip()
        address = json.load(open(os.path.join(run_dir, "control.json")))["address"]
        token = open(os.path.join(run_dir, "control.token")).read().strip()
        check("status --page prints ADDRESS/#token=TOKEN", url == f"{address}/#token={token}", url)
        check_refusals(b, address, token)
        open_with_token(b, url)
        first = step_of(b)
        b.wait(f"parseInt(document.getElementById('step').textContent) > {first}",
               "the job's step advancing on the page")
        code, status = direct_status(address, token)
        want = [n["id"] for n in status["nodes"]] if code == 200 else None
        check("the page's nodes are the job's", node_ids(b) == want and len(want) == 2,
              f"page {node_ids(b)}, /status {want}")
        answer = click_scale(b, 3)
        check("scale to 3 from the page is accepted", ": ok: " in answer, answer)
        b.wait("document.getElementById('node-count').textContent === '3' && "
               "[...document.querySelectorAll('#nodes tr')].every(r => "
               "r.textContent.includes('active'))", "3 active nodes on the page", timeout_s=40)
        code, status = direct_status(address, token)
        check("the job has 3 nodes", code == 200 and len(status["nodes"]) == 3, str(status)[:300])
        b.wait("document.querySelectorAll('#loss-chart polyline.loss').length == 1",
               "the loss curve from GET /history")
        check("the scale is on the timeline", "scale" in b.text("events"), b.text("events")[:300])
        kinds = b.eval("[...document.querySelectorAll('#events .kind')].map(e => e.textContent)")
        check("every event has its kind", kinds and "—" not in kinds, kinds)
        screenshot(b, os.path.join(work, "page-live.png"))
    finally:
        if job.poll() is None:
            job.send_signal(2)  # Ctrl-C: launch stops its nodes
            try:
                job.wait(timeout=20)
            except subprocess.TimeoutExpired:
                job.kill()
                job.wait()
        log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--troupe", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--part", choices=["stand-in", "live", "all"], default="all")
    ap.add_argument("--steps", type=int, default=200, help="steps of the live job")
    a = ap.parse_args()
    exe = find_chromium()
    if not exe:
        print("SKIP: no chromium on PATH (setup.sh installs it): the page is not tested")
        return SKIP
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    started = time.time()
    b = Browser(exe, a.work)
    try:
        for name, part in (("stand-in", lambda: part_stand_in(b, a.troupe, a.work)),
                           ("live", lambda: part_live(b, a.troupe, a.work, a.steps))):
            if a.part in (name, "all"):
                try:
                    part()
                except CheckFailed as e:
                    failures.append(f"{name}: {e}")
                    print(f"BAD {name}: {e}")
    finally:
        b.close()
    for f in failures:
        print("FAIL " + f)
    print(f"page: {len(failures)} failure(s) in {time.time() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
