"""Fixtures for the interop tests of record: the real Jupyter peers against kernelgate.

KERNELGATE_BIN points at the kernelgate binary (scripts/test sets it). The rhai kernelspecs are
installed into a temporary JUPYTER_PATH so the tests never touch the user's configuration.
"""
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("KERNELGATE_BIN", ROOT / "target" / "debug" / "kernelgate"))
if not BIN.exists():
    raise RuntimeError(f"kernelgate binary {BIN} is missing: build it first (scripts/test does)")

# One kernelspec directory for the whole session, set before jupyter modules read the path.
_SPECS = Path(tempfile.mkdtemp(prefix="kernelgate-specs-"))
subprocess.run([str(BIN), "kernelspec", "install", "--prefix", str(_SPECS)], check=True, capture_output=True)


def _variant(name, display_name, extra_argv=(), **fields):
    """Installs a variant of the rhai kernelspec: its argv plus `extra_argv`, and `fields`."""
    spec = json.loads((_SPECS / "share/jupyter/kernels/rhai/kernel.json").read_text())
    spec["argv"] = spec["argv"] + list(extra_argv)
    spec["display_name"] = display_name
    spec.update(fields)
    directory = _SPECS / "share/jupyter/kernels" / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kernel.json").write_text(json.dumps(spec))


_variant("rhai-signal", "Rhai (signal interrupts)", interrupt_mode="signal")
# A kernel with a half-second replay window, to show cells queued behind a longer one still run.
_variant("rhai-short-window", "Rhai (0.5 s replay window)", ["--replay-window", "0.5"])
# A kernel that stops a cell after 100,000 operations.
_variant("rhai-few-operations", "Rhai (100,000 operations a cell)", ["--max-operations", "100000"])
# A kernel allowed 64 MiB of heap.
_variant("rhai-small-memory", "Rhai (64 MiB)", ["--max-memory-mib", "64"])
os.environ["JUPYTER_PATH"] = str(_SPECS / "share/jupyter")
os.environ.setdefault("JUPYTER_RUNTIME_DIR", tempfile.mkdtemp(prefix="kernelgate-runtime-"))
os.environ["JUPYTER_PLATFORM_DIRS"] = "1"

TIMEOUT = 30


@pytest.fixture
def rhai_kernel():
    """A running built-in kernel started by jupyter_client's KernelManager, and a ready client."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="rhai", startup_timeout=TIMEOUT)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def wait_for_connection_file(conn, proc):
    """Waits (at most TIMEOUT) for the kernel process `proc` to write `conn`; its contents."""
    deadline = time.monotonic() + TIMEOUT
    while not conn.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "kernel did not write its connection file"
        time.sleep(0.02)
    return json.loads(conn.read_text())


def plaintext_subscriber(info):
    """A SUB socket without CURVE on the kernel's IOPub, given time to join."""
    import zmq

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.subscribe(b"")
    sub.connect(f"tcp://{info['ip']}:{info['iopub_port']}")
    time.sleep(0.3)
    return sub


@pytest.fixture
def kernelgate_bin():
    return BIN
