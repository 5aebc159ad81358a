"""Issue 5's attack suite: code in kernel A (ipykernel running Python, and the built-in Rhai
kernel where the language can express the attack) against kernel B and the host, all started by
`kernelgate serve` as the same OS user. Every attempt must fail with the sandbox on, and the same
attempt must SUCCEED with the sandbox off, so that these tests can fail. A legitimate client keeps
using B throughout, and B's refusals of bad messages are logged by the host.

Needs Linux Landlock ABI 6 or later (signal scoping); the CI machine offers 7. Run as root, the
"off" half also shows ptrace and /proc/PID/mem working, which Landlock denies even to root.
"""
import base64
import socket
import json
import time
import uuid
from pathlib import Path

import pytest
import zmq
from jupyter_client.session import Session

from conftest import TIMEOUT
from hosting import Host

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
attempt("connect to a Unix socket of the user (systemd, ssh-agent, D-Bus)",
        lambda: socket.socket(socket.AF_UNIX).connect(P["unix"]))
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
    # A pathname Unix socket of the same user outside every kernel's files, as systemd's user
    # manager or ssh-agent keep one (Landlock does not govern connect(2) on these).
    agent = socket.socket(socket.AF_UNIX)
    agent_path = host.runtime.parent / f"agent-{uuid.uuid4().hex[:8]}.sock"
    agent.bind(str(agent_path))
    agent.listen(8)
    params = dict(unix=str(agent_path),
        pid=b["pid"], conn=b["conn"], runtime=str(host.runtime), state=str(host.state_file),
        token=str(host.token_file), host_port=host.port, scheme=info["signature_scheme"],
        ip=info["ip"], replay=[base64.b64encode(f).decode() for f in frames],
        **{k: v for k, v in info.items() if k.endswith("_port")})
    blob = base64.b64encode(json.dumps(params).encode()).decode()
    try:
        out, status = host.execute(a_id, ATTACK % blob)
    finally:
        agent.close()
        agent_path.unlink(missing_ok=True)
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
        assert "PermissionError" in results[
            "connect to a Unix socket of the user (systemd, ssh-agent, D-Bus)"], report
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
