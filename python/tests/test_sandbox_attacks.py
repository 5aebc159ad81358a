"""Issue 5's attack suite: code in kernel A (ipykernel running Python, and the built-in Rhai
kernel where the language can express the attack) against kernel B and the host, all started by
`kernelgate serve` as the same OS user. Every attempt must fail with the sandbox on, and the same
attempt must SUCCEED with the sandbox off, so that these tests can fail. A legitimate client keeps
using B throughout, and B's refusals of bad messages are logged by the host.

Needs Linux Landlock ABI 6 or later (signal scoping); the CI machine offers 7. Run as root, the
"off" half also shows ptrace and /proc/PID/mem working, which Landlock denies even to root.
"""
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import websocket
import zmq
from jupyter_client.session import Session

from conftest import BIN, TIMEOUT

PY_SPECS = Path(sys.prefix) / "share/jupyter/kernels"


class Host:
    """A `kernelgate serve` of our own, every file of it under tmp."""

    def __init__(self, tmp: Path, sandbox: str):
        self.tmp = tmp
        self.runtime = tmp / "runtime"
        self.token_file = tmp / "token"
        self.token = uuid.uuid4().hex + uuid.uuid4().hex
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        self.log_path = tmp / "host.log"
        # The venv's python first on PATH, as its activation would do: the kernelspec says
        # "python", and a version manager's shim would need the manager's whole tree.
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(self.runtime),
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        env.pop("KERNELGATE_TOKEN_FILE", None)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--port", "0", "--token-file", str(self.token_file),
             "--kernel-dirs", str(PY_SPECS), "--sandbox", sandbox,
             "--kernel-work-root", str(tmp / "work"), "--hb-interval", "1"],
            stdout=subprocess.PIPE, stderr=self.log, env=env)
        line = self.proc.stdout.readline().decode()
        match = re.search(r":(\d+)/\?token=", line)
        assert match, f"no URL from kernelgate serve: {line!r}\n{self.log_path.read_text()}"
        self.port = int(match.group(1))
        self.state_file = self.runtime / f"kernelgate-host-{self.port}.json"

    def close(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(TIMEOUT)
        finally:
            self.log.close()

    def rest(self, method, path, body=None):
        import urllib.request
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return json.loads(r.read() or b"null")

    def start(self, name):
        model = self.rest("POST", "/api/kernels", {"name": name})
        deadline = time.monotonic() + TIMEOUT
        while model["execution_state"] != "idle":
            assert time.monotonic() < deadline, model
            time.sleep(0.1)
            model = self.rest("GET", f"/api/kernels/{model['id']}")
        return model

    def kernel_facts(self, kernel_id):
        """What an attacker would want to know about a kernel (read by the unsandboxed test)."""
        conn = self.runtime / f"kernel-{kernel_id}.json"
        info = json.loads(conn.read_text())
        deadline = time.monotonic() + TIMEOUT
        while True:  # the host writes its state file at most every 200 ms
            state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
            pids = [k["pid"] for k in state.get("kernels", []) if k["id"] == kernel_id]
            if pids:
                return {"pid": pids[0], "conn": str(conn), "info": info}
            assert time.monotonic() < deadline, f"kernel {kernel_id} not in the state file"
            time.sleep(0.05)

    def execute(self, kernel_id, code):
        """Runs a cell over the WebSocket API (legacy JSON protocol); returns (text, status)."""
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?token={self.token}",
            timeout=TIMEOUT)
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3",
                       "date": datetime.now(timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
        out, status, idle = [], None, False
        deadline = time.monotonic() + 90
        while status is None or not idle:
            assert time.monotonic() < deadline, "no reply to execute_request"
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["header"]["msg_type"], msg["content"]
            if kind == "stream":
                out.append(content["text"])
            elif kind == "execute_result":
                out.append(content["data"].get("text/plain", ""))
            elif kind == "error":
                out.append(f"{content['ename']}: {content['evalue']}")
            elif kind == "execute_reply":
                status = content["status"]
            elif kind == "status" and content["execution_state"] == "idle":
                idle = True
        ws.close()
        return "".join(out), status


@pytest.fixture(params=["on", "off"])
def host(request, tmp_path):
    h = Host(tmp_path, request.param)
    h.sandbox = request.param
    try:
        yield h
    finally:
        h.close()


def genuine_frames(info, code):
    """A message B's legitimate client signs and sends (and an eavesdropper could capture)."""
    s = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
    return s.serialize(s.msg("execute_request", {"code": code, "silent": True}))


def send_genuinely(info, frames):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(f"tcp://{info['ip']}:{info['shell_port']}")
    sock.send_multipart(frames)
    assert sock.poll(TIMEOUT * 1000), "the genuine message got no reply"
    sock.close()


# Python run inside kernel A. Each attempt records "ok: ..." when it worked, "denied: ..." else.
ATTACK = r'''
import ctypes, json, os, signal, socket, subprocess, sys, threading, time, base64, urllib.request
import zmq
from jupyter_client.session import Session
P = json.loads(base64.b64decode(%r))
R = {}
def attempt(name, fn):
    try:
        R[name] = "ok: " + str(fn())[:80]
    except Exception as e:
        R[name] = "denied: " + type(e).__name__ + ": " + str(e)[:80]
def read(path):
    with open(path, "rb") as f:
        return f.read(64)
attempt("read B's connection file", lambda: read(P["conn"]))
attempt("list the runtime directory", lambda: os.listdir(P["runtime"]))
attempt("read the host's state file", lambda: read(P["state"]))
attempt("read the host's token", lambda: read(P["token"]))
attempt("read /proc/B/environ", lambda: read(f"/proc/{P['pid']}/environ"))
def mem():
    with open(f"/proc/{P['pid']}/maps") as f:
        start = int(next(l for l in f if " r" in l).split("-")[0], 16)
    with open(f"/proc/{P['pid']}/mem", "rb") as m:
        m.seek(start)
        return m.read(16)
attempt("read /proc/B/mem", mem)
def ptrace():
    # In a child process: when the tracer exits, B is detached again.
    code = ("import ctypes,sys; libc=ctypes.CDLL(None,use_errno=True); "
            "r=libc.ptrace(0x4206, %%d, None, None); sys.exit(0 if r==0 else ctypes.get_errno())" %% P["pid"])
    rc = subprocess.run([sys.executable, "-c", code]).returncode
    if rc:
        raise PermissionError(os.strerror(rc))
    return "attached"
attempt("ptrace B", ptrace)
attempt("signal B (0)", lambda: os.kill(P["pid"], 0))
attempt("SIGINT to B", lambda: os.kill(P["pid"], signal.SIGINT))
for ch in ["shell", "control", "iopub", "hb"]:
    attempt(f"connect to B's {ch} port",
            lambda ch=ch: socket.create_connection((P["ip"], P[ch + "_port"]), timeout=3).close())
attempt("connect to the host API", lambda: socket.create_connection(("127.0.0.1", P["host_port"]), timeout=3).close())
def api(token):
    req = urllib.request.Request(f"http://127.0.0.1:{P['host_port']}/api/kernels",
                                 headers={"Authorization": "token " + token} if token else {})
    return urllib.request.urlopen(req, timeout=5).read()
attempt("host API without token", lambda: api(""))
attempt("host API with a guessed token", lambda: api("0" * 64))
attempt("child process reads B's connection file",
        lambda: subprocess.run(["cat", P["conn"]], capture_output=True, check=True).stdout[:64])
ctx = zmq.Context.instance()
def send_to_shell(frames):
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(f"tcp://{P['ip']}:{P['shell_port']}")
    s.send_multipart(frames)
    got = s.poll(2000)
    s.close()
    if not got:
        raise TimeoutError("no reply")
    return "B answered"
forger = Session(key=b"guessed-key", signature_scheme=P["scheme"])
forged = forger.serialize(forger.msg("kernel_info_request", {}))
unsigned = list(forged)
unsigned[1] = b""
attempt("unsigned message to B", lambda: send_to_shell(unsigned))
attempt("forged message to B", lambda: send_to_shell(forged))
attempt("replayed message to B", lambda: send_to_shell([base64.b64decode(f) for f in P["replay"]]))
def stolen_key():
    with open(P["conn"]) as f:
        info = json.load(f)
    s = Session(key=info["key"].encode(), signature_scheme=P["scheme"])
    return send_to_shell(s.serialize(s.msg("kernel_info_request", {})))
attempt("message signed with B's stolen key", stolen_key)
heard = []
def listen():
    s = ctx.socket(zmq.SUB)
    s.linger = 0
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(f"tcp://{P['ip']}:{P['iopub_port']}")
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        if s.poll(200):
            heard.append(b"".join(s.recv_multipart()))
    s.close()
listener = threading.Thread(target=listen, daemon=True)
listener.start()
print(json.dumps(R))
'''

COLLECT = r'''
listener.join(15)
print(json.dumps({"subscribe to B's iopub and read its output":
                  "ok: heard it" if any(b"%s" in m for m in heard) else "denied: heard nothing"}))
'''


def attack(host, a_id, b_id):
    b = host.kernel_facts(b_id)
    info = b["info"]
    # B's legitimate client sends a genuine message; its bytes are what a replay re-sends.
    frames = genuine_frames(info, "1 + 1")
    send_genuinely(info, frames)
    params = dict(
        pid=b["pid"], conn=b["conn"], runtime=str(host.runtime), state=str(host.state_file),
        token=str(host.token_file), host_port=host.port, scheme=info["signature_scheme"],
        ip=info["ip"], replay=[base64.b64encode(f).decode() for f in frames],
        **{k: v for k, v in info.items() if k.endswith("_port")})
    blob = base64.b64encode(json.dumps(params).encode()).decode()
    out, status = host.execute(a_id, ATTACK % blob)
    assert status == "ok", out
    results = json.loads(out.strip().splitlines()[-1])
    # While A listens on B's iopub, B's legitimate user runs a cell with a secret in its output.
    secret = f"secret-{uuid.uuid4().hex}"
    assert host.execute(b_id, f'print("{secret}")') == (secret + "\n", "ok")
    out, status = host.execute(a_id, COLLECT % secret)
    assert status == "ok", out
    results.update(json.loads(out.strip().splitlines()[-1]))
    return results


ALWAYS_REFUSED = {"unsigned message to B", "forged message to B", "replayed message to B",
                  "host API without token", "host API with a guessed token"}


def check(host, results):
    report = "\n".join(f"  {k}: {v}" for k, v in results.items())
    for name, outcome in results.items():
        if host.sandbox == "on" or name in ALWAYS_REFUSED:
            assert outcome.startswith("denied"), f"{name} succeeded with sandbox {host.sandbox}:\n{report}"
        else:
            assert outcome.startswith("ok"), f"{name} failed with the sandbox off:\n{report}"
    if host.sandbox == "on":
        # Landlock itself refused the connections (EACCES), not a closed port.
        assert "PermissionError" in results["connect to B's shell port"], report
        assert "PermissionError" in results["connect to the host API"], report
    return report


@pytest.mark.timeout(600)
@pytest.mark.parametrize("victim", ["python3", "rhai"])
def test_attacks_from_python_kernel(host, victim):
    a = host.start("python3")
    b = host.start(victim)
    if host.sandbox == "on":
        for k in (a, b):
            assert k["sandbox"]["enabled"] is True and k["sandbox"]["missing"] == [], k
        api = host.rest("GET", "/api")
        assert api["sandbox"]["mode"] == "on" and api["sandbox"]["landlock_abi"] >= 6, api
    else:
        assert a["sandbox"] is None, a
    legit = 'print("legit")'
    assert host.execute(b["id"], legit) == ("legit\n", "ok")
    results = attack(host, a["id"], b["id"])
    check(host, results)
    assert host.execute(b["id"], legit) == ("legit\n", "ok"), "B's legitimate client was disturbed"
    log = host.log_path.read_text(errors="replace")
    if victim == "rhai" and host.sandbox == "off":
        # The built-in kernel's refusals reach the host's log (rate-limited, no key material).
        assert "refused message" in log, log[-3000:]
        assert host.kernel_facts(b["id"])["info"]["key"] not in log
    if victim == "python3" and host.sandbox == "off":
        # ipykernel logs its refusals too (to its stderr, which is the host's log).
        assert "Invalid message" in log, log[-3000:]
    # Last, the bluntest attack: SIGKILL. Refused with the sandbox; with it off, B dies and the
    # host restarts it.
    facts = host.kernel_facts(b["id"])
    out, _ = host.execute(a["id"], f"import os, signal\ntry:\n    os.kill({facts['pid']}, signal.SIGKILL)\n"
                                   f"    print('killed')\nexcept Exception as e:\n    print('denied', e)")
    if host.sandbox == "on":
        assert out.startswith("denied"), out
        assert host.execute(b["id"], legit) == ("legit\n", "ok")
    else:
        assert out.startswith("killed"), out
        deadline = time.monotonic() + TIMEOUT
        while host.rest("GET", f"/api/kernels/{b['id']}")["restarts"] < 1:
            assert time.monotonic() < deadline, "B was not restarted after SIGKILL"
            time.sleep(0.1)


@pytest.mark.timeout(300)
def test_rhai_kernel_cannot_import_files_outside_its_domain(host):
    """Rhai has no file, process or network primitives, but `import "path"` reads PATH.rhai: the
    one way Rhai code can reach another file. Planted in the runtime directory it is readable with
    the sandbox off and refused with it on."""
    planted = host.runtime / "planted"
    planted.with_suffix(".rhai").write_text('export const leaked = "stolen";\n')
    a = host.start("rhai")
    out, status = host.execute(a["id"], f'import "{planted}" as p; p::leaked')
    if host.sandbox == "on":
        assert status == "error", out
        assert "stolen" not in out
    else:
        assert (out, status) == ('"stolen"', "ok")
    # Its own working directory works.
    if host.sandbox == "on":
        Path(a["sandbox"]["work_dir"], "mine.rhai").write_text('export const x = 7;\n')
        assert host.execute(a["id"], 'import "mine" as m; m::x') == ("7", "ok")
