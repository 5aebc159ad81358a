"""`kernelgate kernel --kernel python3`: ipykernel launched and managed by kernelgate, driven by
jupyter_client's BlockingKernelClient. Sandbox on: the kernel works in its own directory and
cannot list the runtime directory; sandbox off: the same listing succeeds (so the check can fail).
SIGINT to kernelgate shuts the kernel down cleanly: exit 0, no process, no connection file.

Needs ipykernel in the Python running these tests (the project's .venv has it): without it
the tests fail, they are not skipped.
"""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

from conftest import BIN, TIMEOUT, plaintext_subscriber

VENV = Path(sys.prefix)
PY_SPECS = VENV / "share/jupyter/kernels"


def wait_until(what, check, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def children(pid):
    """Pids whose parent is `pid` (from /proc/*/stat; the name in parentheses may hold spaces)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


def start_time(pid):
    """Field 22 of /proc/PID/stat (None once the process is gone), to tell a reused pid apart."""
    try:
        return int((Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split())[19])
    except (OSError, IndexError, ValueError):
        return None


def processes_naming(text):
    """Pids whose command line mentions `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def run(kc, code):
    """Executes code; returns (reply, iopub messages of this request until idle), all bounded."""
    outputs = []
    reply = kc.execute_interactive(code, timeout=TIMEOUT, output_hook=outputs.append)
    return reply, outputs


def of_type(outputs, t):
    return [m for m in outputs if m["msg_type"] == t]


class Managed:
    """`kernelgate kernel --kernel python3` with every file under tmp."""

    def __init__(self, tmp: Path, sandbox: str, extra=()):
        assert importlib.util.find_spec("ipykernel"), f"ipykernel is not installed in {VENV}"
        assert (PY_SPECS / "python3/kernel.json").is_file(), f"no python3 kernelspec in {PY_SPECS}"
        self.tmp = tmp
        self.runtime = tmp / "runtime"
        self.runtime.mkdir(mode=0o700)
        # Something for a kernel to find in the runtime directory, if it can look.
        (self.runtime / "other-kernel.json").write_text("{}")
        self.work = tmp / "work"
        self.conn = tmp / "conn.json"
        self.out_path, self.err_path = tmp / "stdout", tmp / "stderr"
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(self.runtime),
                   PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
        env.pop("KERNELGATE_TOKEN_FILE", None)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(BIN), "kernel", "--kernel", "python3", "--kernel-dirs", str(PY_SPECS),
                 "-f", str(self.conn), "--sandbox", sandbox,
                 "--kernel-work-root", str(self.work), *extra],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        self.kernel_pid = None
        self.kc = None

    def logs(self):
        return f"stdout:\n{self.out_path.read_text()}\nstderr:\n{self.err_path.read_text()}"

    def wait_ready(self):
        wait_until("connection file", lambda: self.conn.exists() or self.proc.poll() is not None)
        assert self.proc.poll() is None, f"kernelgate exited {self.proc.returncode}\n{self.logs()}"
        wait_until("ready line", lambda: "ready" in self.out_path.read_text()
                   or self.proc.poll() is not None)
        assert self.proc.poll() is None, f"kernelgate exited {self.proc.returncode}\n{self.logs()}"
        assert str(self.conn) in self.out_path.read_text()
        assert self.conn.stat().st_mode & 0o077 == 0, "connection file readable by others"
        kids = children(self.proc.pid)
        assert len(kids) == 1, f"kernelgate's children: {kids}"
        self.kernel_pid = kids[0]
        self.kernel_start = start_time(self.kernel_pid)
        assert b"ipykernel_launcher" in Path(f"/proc/{self.kernel_pid}/cmdline").read_bytes()
        assert f"pid {self.kernel_pid}" in self.out_path.read_text()
        # Its own process group: a Ctrl-C in kernelgate's terminal does not reach it.
        assert os.getpgid(self.kernel_pid) == self.kernel_pid
        self.kc = BlockingKernelClient()
        self.kc.load_connection_file(str(self.conn))
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=TIMEOUT)
        return self.kc

    def kernel_alive(self):
        return self.kernel_pid is not None and start_time(self.kernel_pid) == self.kernel_start

    def stop(self):
        """SIGINT, as Ctrl-C would: exit 0, kernel gone, connection file removed."""
        self.kc.stop_channels()
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"kernelgate still running {TIMEOUT} s after SIGINT\n{self.logs()}")
        assert code == 0, f"kernelgate exited {code}\n{self.logs()}"
        assert not self.kernel_alive(), f"kernel {self.kernel_pid} left running"
        assert processes_naming(str(self.conn)) == [], "a process still names the connection file"
        assert not self.conn.exists(), "connection file left behind"
        assert "stopped" in self.err_path.read_text(), self.logs()

    def cleanup(self):
        if self.kc is not None:
            self.kc.stop_channels()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        if self.kernel_alive():
            os.killpg(self.kernel_pid, signal.SIGKILL)


@pytest.fixture
def managed(tmp_path):
    made = []

    def start(sandbox, *extra):
        m = Managed(tmp_path, sandbox, extra)
        made.append(m)
        return m

    yield start
    for m in made:
        m.cleanup()


PROBE = """
import json, os, tempfile
result = {{"cwd": os.getcwd(), "tmpdir": tempfile.gettempdir()}}
try:
    result["listing"] = os.listdir({runtime!r})
except PermissionError:
    result["listing"] = "denied"
try:
    with open({secret!r}) as f:
        result["secret"] = f.read()
except PermissionError:
    result["secret"] = "denied"
print(json.dumps(result))
"""


def probe(m: Managed):
    code = PROBE.format(runtime=str(m.runtime), secret=str(m.runtime / "other-kernel.json"))
    reply, out = run(m.kc, code)
    assert reply["content"]["status"] == "ok", reply["content"]
    text = "".join(s["content"]["text"] for s in of_type(out, "stream"))
    return json.loads(text)


def test_managed_ipykernel_sandboxed_and_stopped_by_sigint(managed):
    m = managed("on")
    kc = m.wait_ready()
    assert "kernel sandboxed" in m.err_path.read_text(), m.logs()

    info = kc.kernel_info(reply=True, timeout=TIMEOUT)["content"]
    assert info["status"] == "ok"
    assert info["implementation"] == "ipython"
    assert info["language_info"]["name"] == "python"

    reply, out = run(kc, "print('hello from ipykernel'); 6 * 7")
    assert reply["content"]["status"] == "ok"
    assert [s["content"]["text"] for s in of_type(out, "stream")] == ["hello from ipykernel\n"]
    assert of_type(out, "execute_result")[0]["content"]["data"]["text/plain"] == "42"

    reply, out = run(kc, "1 / 0")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "ZeroDivisionError"
    assert of_type(out, "error")[0]["content"]["ename"] == "ZeroDivisionError"

    seen = probe(m)
    cwd = Path(seen["cwd"])
    assert cwd.parent == m.work.resolve(), f"kernel works in {cwd}, not in its own dir under {m.work}"
    assert seen["listing"] == "denied", seen
    assert seen["secret"] == "denied", seen
    assert Path(seen["tmpdir"]) == cwd / ".tmp", seen

    m.stop()
    # The kernel's files stay in its working directory; its TMPDIR goes.
    assert cwd.is_dir() and not (cwd / ".tmp").exists()


def test_managed_ipykernel_without_sandbox_sees_the_runtime_dir(managed):
    m = managed("off")
    m.wait_ready()
    assert "--sandbox off" in m.err_path.read_text(), m.logs()
    seen = probe(m)
    assert "other-kernel.json" in seen["listing"], seen
    assert seen["secret"] == "{}", seen
    assert not Path(seen["cwd"]).is_relative_to(m.work), seen
    m.stop()


def test_managed_ipykernel_with_curve_in_the_sandbox(managed):
    """`kernelgate kernel --kernel python3 --curve`: ipykernel gets CURVE keys in its connection
    file (and may rewrite it, as it always does then, inside the sandbox); jupyter_client connects
    with them, and a plaintext subscriber reads nothing of its output."""
    m = managed("on", "--curve")
    kc = m.wait_ready()
    info = json.loads(m.conn.read_text())
    assert len(info.get("curve_publickey", "")) == 40
    sub = plaintext_subscriber(info)
    reply, out = run(kc, "print('private')")
    assert reply["content"]["status"] == "ok"
    assert "".join(x["content"]["text"] for x in of_type(out, "stream")) == "private\n"
    assert not sub.poll(500), "a plaintext subscriber read IOPub"
    sub.close()
    m.stop()
