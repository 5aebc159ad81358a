"""Starts an ipykernel with jupyter_client's KernelManager for kernelgate-client's tests.

argv[1]: transport_encryption ("disabled" or "required"). Prints one JSON line with the
connection file and pid, then obeys commands on stdin: "alive" prints {"alive": bool};
"wait" waits up to 10 s for the kernel to exit by itself and prints {"alive": bool}.
EOF on stdin shuts the kernel down.
"""
import json
import os
import sys
import time
import uuid

from jupyter_client import KernelManager
from jupyter_core.paths import jupyter_runtime_dir

km = KernelManager(kernel_name="python3", transport_encryption=sys.argv[1] if len(sys.argv) > 1 else "disabled")
km.connection_file = os.path.join(jupyter_runtime_dir(), f"kernel-{uuid.uuid4()}.json")
km.start_kernel()
print(json.dumps({"connection_file": km.connection_file, "pid": km.provisioner.process.pid}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "wait":
        end = time.time() + 10
        while km.is_alive() and time.time() < end:
            time.sleep(0.05)
    if cmd in ("alive", "wait"):
        print(json.dumps({"alive": km.is_alive()}), flush=True)
try:
    if km.is_alive():
        km.shutdown_kernel(now=True)
    km.cleanup_resources()
except Exception as e:  # noqa: BLE001 - best effort at teardown
    print(f"teardown: {e}", file=sys.stderr)
