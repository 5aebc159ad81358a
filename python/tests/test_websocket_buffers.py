"""The WebSocket API carries binary buffers both ways, in both protocols, encoded and decoded by
jupyter_server's own codec (not ours): a comm on ipykernel behind `kernelgate serve` echoes the
buffers a client sends, and several clients of one kernel each see the echo."""
import json
import time
import uuid
from datetime import datetime, timezone

import pytest
import websocket
from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)

from conftest import TIMEOUT
from hosting import Host

V1 = "v1.kernel.websocket.jupyter.org"
ECHO_TARGET = """
from comm import get_comm_manager
def _kg_target(comm, open_msg):
    @comm.on_msg
    def _echo(msg):
        comm.send(data={"echo": msg["content"]["data"]}, buffers=msg["buffers"])
get_comm_manager().register_target("kg-echo", _kg_target)
"""
BUFFERS = [b"\x00\x01\x02\xff", b"", bytes(range(256)) * 40]


class Client:
    def __init__(self, host, kernel_id, v1):
        self.v1 = v1
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{host.port}/api/kernels/{kernel_id}/channels"
            f"?session_id={self.session}&token={host.token}",
            timeout=TIMEOUT, subprotocols=[V1] if v1 else None)
        assert (self.ws.getsubprotocol() == V1) == v1

    def send(self, channel, msg_type, content, buffers=()):
        header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "username": "test",
                  "session": self.session, "version": "5.3",
                  "date": datetime.now(timezone.utc).isoformat()}
        if self.v1:
            parts = [json.dumps(p).encode() for p in (header, {}, {}, content)] + list(buffers)
            self.ws.send_binary(serialize_msg_to_ws_v1(parts, channel))
        else:
            msg = {"channel": channel, "header": header, "parent_header": {}, "metadata": {},
                   "content": content, "buffers": list(buffers)}
            if buffers:
                self.ws.send_binary(serialize_binary_message(msg))
            else:
                msg.pop("buffers")
                self.ws.send(json.dumps(msg))
        return header["msg_id"]

    def recv(self):
        """The next message as (channel, msg dict with "buffers")."""
        frame = self.ws.recv()
        if self.v1:
            assert isinstance(frame, bytes), "v1 frames are binary"
            channel, parts = deserialize_msg_from_ws_v1(frame)
            msg = dict(zip(("header", "parent_header", "metadata", "content"),
                           (json.loads(p) for p in parts[:4])))
            msg["buffers"] = [bytes(b) for b in parts[4:]]
            return channel, msg
        if isinstance(frame, bytes):
            msg = deserialize_binary_message(frame)
            msg["buffers"] = [bytes(b) for b in msg["buffers"]]
        else:
            msg = json.loads(frame)
            msg.setdefault("buffers", [])
        return msg["channel"], msg

    def wait(self, what, match):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            channel, msg = self.recv()
            if match(channel, msg):
                return msg
        raise AssertionError(f"no {what} in {TIMEOUT} s")

    def execute(self, code):
        msg_id = self.send("shell", "execute_request",
                           {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False})
        reply = self.wait("execute_reply", lambda ch, m: ch == "shell"
                          and m["parent_header"].get("msg_id") == msg_id)
        assert reply["content"]["status"] == "ok", reply["content"]


@pytest.fixture(scope="module")
def python_kernel(tmp_path_factory):
    host = Host(tmp_path_factory.mktemp("buffers"))
    try:
        yield host, host.start("python3")["id"]
    finally:
        host.close()


@pytest.mark.parametrize("v1", [False, True], ids=["legacy", "v1"])
def test_buffers_round_trip_through_a_comm(python_kernel, v1):
    host, kernel_id = python_kernel
    client, watcher = Client(host, kernel_id, v1), Client(host, kernel_id, not v1)
    try:
        client.execute(ECHO_TARGET)
        comm_id = uuid.uuid4().hex
        client.send("shell", "comm_open",
                    {"comm_id": comm_id, "target_name": "kg-echo", "data": {}})
        client.send("shell", "comm_msg", {"comm_id": comm_id, "data": {"n": 7}}, BUFFERS)

        def is_echo(channel, msg):
            return (channel == "iopub" and msg["header"]["msg_type"] == "comm_msg"
                    and msg["content"]["comm_id"] == comm_id)

        for who in (client, watcher):
            echo = who.wait("echoed comm_msg", is_echo)
            assert echo["content"]["data"] == {"echo": {"n": 7}}
            assert echo["buffers"] == BUFFERS, [len(b) for b in echo["buffers"]]
        client.send("shell", "comm_close", {"comm_id": comm_id, "data": {}})
    finally:
        client.ws.close()
        watcher.ws.close()
