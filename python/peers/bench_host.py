"""Peer of `kernelgate-bench host`: jupyter_server serving ipykernel.

Starts `python -m jupyter_server` (token in the JUPYTER_TOKEN environment variable, never argv;
private runtime/config/data directories), then prints JSON lines:

- {"case": "rtt", "median_us", "p99_us", "rounds", ...}: execute_request "1+1" -> execute_reply
  round trips over the kernel's WebSocket (legacy JSON protocol, websocket-client), after warm-up;
  then {"case": "rtt_quickack", ...}: the same with TCP_QUICKACK set before every read (diagnostic).
- {"case": "scale", "kernels", "ready_ms", "server_cpu_pct", "kernels_cpu_pct", "server_rss_mib",
  "per_kernel_rss_mib", "delete_ms"}: N ipykernels started through POST /api/kernels (concurrently),
  time until GET /api/kernels shows all idle, CPU over the idle window, memory, deletion.
"""

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import jupyter_server
import websocket


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, tmp):
        self.token = secrets.token_hex(32)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["JUPYTER_TOKEN"] = self.token
        for var, sub in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"), ("IPYTHONDIR", "ipython")):
            env[var] = os.path.join(tmp, sub)
            os.makedirs(env[var], mode=0o700, exist_ok=True)
        root = os.path.join(tmp, "root")
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", f"--ServerApp.port={self.port}",
             "--ServerApp.ip=127.0.0.1", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
             "--ServerApp.log_level=WARN", "--allow-root"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        t0 = time.time()
        while True:
            try:
                self.req("GET", "/api/status")
                break
            except Exception:
                if self.proc.poll() is not None:
                    raise SystemExit(f"jupyter_server exited with {self.proc.returncode}")
                if time.time() - t0 > 60:
                    raise SystemExit("jupyter_server did not answer within 60 s")
                time.sleep(0.05)

    def req(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        r = urllib.request.Request(self.base + path, data=data, method=method)
        r.add_header("Authorization", f"token {self.token}")
        if data is not None:
            r.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(r, timeout=120) as resp:
            text = resp.read()
        return json.loads(text) if text else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def header(msg_type):
    return {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "bench", "username": "bench",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()), "version": "5.4"}


def ws_request(ws, msg_type, content, quickack=False):
    h = header(msg_type)
    ws.send(json.dumps({"channel": "shell", "header": h, "parent_header": {}, "metadata": {}, "content": content}))
    want = msg_type.replace("_request", "_reply")
    while True:
        if quickack:
            # Linux clears TCP_QUICKACK after use: set it before every read.
            ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        m = json.loads(ws.recv())
        if m.get("channel") == "shell" and m["parent_header"].get("msg_id") == h["msg_id"] and m["header"]["msg_type"] == want:
            return m


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, round((len(v) - 1) * q))]


def rtt(server, rounds, warmup):
    kid = server.req("POST", "/api/kernels", {"name": "python3"})["id"]
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/api/kernels/{kid}/channels?session_id=bench",
        header=[f"Authorization: token {server.token}"], timeout=60)
    ws_request(ws, "kernel_info_request", {})
    content = {"code": "1+1", "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    res = []
    for case, quickack in (("rtt", False), ("rtt_quickack", True)):
        out = []
        for i in range(warmup + rounds):
            t = time.perf_counter()
            r = ws_request(ws, "execute_request", content, quickack)
            us = (time.perf_counter() - t) * 1e6
            if r["content"]["status"] != "ok":
                raise SystemExit(f"execute_reply {r['content']}")
            if i >= warmup:
                out.append(us)
        res.append({"case": case, "median_us": pct(out, 0.5), "p99_us": pct(out, 0.99), "rounds": len(out)})
    ws.close()
    server.req("DELETE", f"/api/kernels/{kid}")
    return res


def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_ticks(pid):
    try:
        f = stat(pid)
        return int(f[11]) + int(f[12])
    except OSError:
        return 0


def children(pid):
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            f = stat(int(e))
        except OSError:
            continue
        if int(f[1]) == pid and f[0] != "Z":
            out.append(int(e))
    return out


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def scale(server, n, idle_secs):
    pid = server.proc.pid
    t0 = time.perf_counter()
    # jupyter_server reports execution_state "starting" until some request reaches the kernel (its
    # own nudge runs when a WebSocket connects), so "ready" here is: every kernel answered a
    # kernel_info_request over its WebSocket.

    def start_one(_):
        kid = server.req("POST", "/api/kernels", {"name": "python3"})["id"]
        # On a loaded machine jupyter_server sometimes closes a WebSocket whose kernel is still
        # starting: connect again (a bounded number of times) rather than fail the run.
        for attempt in range(5):
            try:
                ws = websocket.create_connection(
                    f"ws://127.0.0.1:{server.port}/api/kernels/{kid}/channels?session_id=bench",
                    header=[f"Authorization: token {server.token}"], timeout=120)
                ws_request(ws, "kernel_info_request", {})
                ws.close()
                return kid
            except websocket.WebSocketConnectionClosedException:
                if attempt == 4:
                    raise
                time.sleep(0.5)

    with ThreadPoolExecutor(n) as ex:
        ids = list(ex.map(start_one, range(n)))
    while True:
        ks = server.req("GET", "/api/kernels")
        idle = sum(1 for k in ks if k["id"] in ids and k["execution_state"] == "idle")
        if idle == n:
            break
        if time.perf_counter() - t0 > 120:
            raise SystemExit(f"only {idle} of {n} ipykernels idle after 120 s: {ks}")
        time.sleep(0.02)
    ready_ms = (time.perf_counter() - t0) * 1e3
    time.sleep(0.5)
    hz = os.sysconf("SC_CLK_TCK")
    kids = children(pid)
    h0, k0 = cpu_ticks(pid), sum(cpu_ticks(k) for k in kids)
    w0 = time.perf_counter()
    time.sleep(idle_secs)
    wall = time.perf_counter() - w0
    h1, k1 = cpu_ticks(pid), sum(cpu_ticks(k) for k in kids)
    server_rss = rss_kib(pid) / 1024
    kids = children(pid)
    per_kernel = sum(rss_kib(k) for k in kids) / 1024 / len(kids) if kids else None
    t1 = time.perf_counter()
    with ThreadPoolExecutor(n) as ex:
        list(ex.map(lambda i: server.req("DELETE", f"/api/kernels/{i}"), ids))
    while children(pid) and time.perf_counter() - t1 < 120:
        time.sleep(0.02)
    delete_ms = (time.perf_counter() - t1) * 1e3
    return {"case": "scale", "kernels": n, "kernel_processes": len(kids), "ready_ms": ready_ms,
            "server_cpu_pct": (h1 - h0) / hz / wall * 100, "kernels_cpu_pct": (k1 - k0) / hz / wall * 100,
            "server_rss_mib": server_rss, "per_kernel_rss_mib": per_kernel, "delete_ms": delete_ms}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--kernels", type=int, default=8)
    ap.add_argument("--idle-secs", type=float, default=5.0)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="kernelgate-bench-js-")
    server = Server(tmp)
    try:
        for r in rtt(server, a.rounds, a.warmup) + [scale(server, a.kernels, a.idle_secs)]:
            r["jupyter_server"] = jupyter_server.__version__
            print(json.dumps(r), flush=True)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
