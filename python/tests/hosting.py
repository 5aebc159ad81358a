"""A `kernelgate serve` of the tests' own (token, runtime directory and log under tmp) with the
venv's kernelspecs (ipykernel's python3), and a small REST and WebSocket client for it."""
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

import websocket

from conftest import BIN, TIMEOUT

PY_SPECS = Path(sys.prefix) / "share/jupyter/kernels"


class Host:
    """A `kernelgate serve` of our own, every file of it under tmp."""

    def __init__(self, tmp: Path, sandbox: str = "on", extra=()):
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
             "--kernel-work-root", str(tmp / "work"), "--hb-interval", "1", *extra],
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


