"""Fixtures for the interop tests of record: the real Jupyter peers against kernelgate.

KERNELGATE_BIN points at the kernelgate binary (scripts/test sets it). The rhai kernelspecs are
installed into a temporary JUPYTER_PATH so the tests never touch the user's configuration.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("KERNELGATE_BIN", ROOT / "target" / "debug" / "kernelgate"))
if not BIN.exists():
    raise RuntimeError(f"kernelgate binary {BIN} is missing: build it first (scripts/test does)")

# One kernelspec directory for the whole session, set before jupyter modules read the path.
_SPECS = Path(tempfile.mkdtemp(prefix="kernelgate-specs-"))
subprocess.run([str(BIN), "kernelspec", "install", "--prefix", str(_SPECS)], check=True, capture_output=True)
_signal_dir = _SPECS / "share/jupyter/kernels/rhai-signal"
_signal_dir.mkdir(parents=True, exist_ok=True)
_spec = json.loads((_SPECS / "share/jupyter/kernels/rhai/kernel.json").read_text())
_spec["interrupt_mode"] = "signal"
_spec["display_name"] = "Rhai (signal interrupts)"
(_signal_dir / "kernel.json").write_text(json.dumps(_spec))
# A kernel with a half-second replay window, to show cells queued behind a longer one still run.
_window_dir = _SPECS / "share/jupyter/kernels/rhai-short-window"
_window_dir.mkdir(parents=True, exist_ok=True)
_window = json.loads((_SPECS / "share/jupyter/kernels/rhai/kernel.json").read_text())
_window["argv"] = _window["argv"] + ["--replay-window", "0.5"]
_window["display_name"] = "Rhai (0.5 s replay window)"
(_window_dir / "kernel.json").write_text(json.dumps(_window))
# A kernel that stops a cell after 100,000 operations.
_few_dir = _SPECS / "share/jupyter/kernels/rhai-few-operations"
_few_dir.mkdir(parents=True, exist_ok=True)
_few = json.loads((_SPECS / "share/jupyter/kernels/rhai/kernel.json").read_text())
_few["argv"] = _few["argv"] + ["--max-operations", "100000"]
_few["display_name"] = "Rhai (100,000 operations a cell)"
(_few_dir / "kernel.json").write_text(json.dumps(_few))
# A kernel allowed 64 MiB of heap.
_small_dir = _SPECS / "share/jupyter/kernels/rhai-small-memory"
_small_dir.mkdir(parents=True, exist_ok=True)
_small = json.loads((_SPECS / "share/jupyter/kernels/rhai/kernel.json").read_text())
_small["argv"] = _small["argv"] + ["--max-memory-mib", "64"]
_small["display_name"] = "Rhai (64 MiB)"
(_small_dir / "kernel.json").write_text(json.dumps(_small))
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


@pytest.fixture
def kernelgate_bin():
    return BIN
