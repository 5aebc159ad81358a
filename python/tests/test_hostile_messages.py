"""Unsigned, wrong-key, replayed, truncated, oversized and garbage messages sent to the built-in
kernel are each refused and counted, while a legitimate client keeps getting answers."""
import subprocess

import pytest
import zmq
from jupyter_client import BlockingKernelClient
from jupyter_client.session import Session

from conftest import BIN, TIMEOUT, wait_for_connection_file

LIMIT = 1 << 20


@pytest.fixture
def kernel(tmp_path):
    conn = tmp_path / "kernel.json"
    proc = subprocess.Popen([str(BIN), "kernel", "-f", str(conn), "--max-message-size", str(LIMIT)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    info = wait_for_connection_file(conn, proc)
    assert oct(conn.stat().st_mode & 0o777) == "0o600"
    kc = BlockingKernelClient()
    kc.load_connection_info(info)
    kc.start_channels()
    kc.wait_for_ready(timeout=TIMEOUT)
    try:
        yield info, kc, proc
    finally:
        kc.stop_channels()
        proc.terminate()
        _, err = proc.communicate(timeout=TIMEOUT)
    assert not conn.exists(), "connection file left behind"
    log = err.decode(errors="replace")
    assert "refused message" in log, "refusals are logged"
    assert info["key"] not in log, "the key reached the log"


def stats(info, session):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.connect(f"tcp://{info['ip']}:{info['control_port']}")
    session.send(s, session.msg("kernelgate_stats_request", {}))
    assert s.poll(TIMEOUT * 1000), "no stats reply"
    _, reply = session.recv(s)
    s.close()
    return reply["content"]["rejected"]


def execute_ok(kc):
    reply = kc.execute_interactive("40 + 2", timeout=TIMEOUT)
    assert reply["content"]["status"] == "ok"


def test_hostile_messages_are_refused_and_counted(kernel):
    info, kc, proc = kernel
    good = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
    bad = Session(key=b"guessed-key", signature_scheme=info["signature_scheme"])
    ctx = zmq.Context.instance()
    attacker = ctx.socket(zmq.DEALER)
    attacker.linger = 0
    attacker.connect(f"tcp://{info['ip']}:{info['shell_port']}")

    def signed(session, code="1"):
        return session.serialize(session.msg("execute_request", {"code": code, "silent": False}))

    frames = signed(good)
    unsigned = list(frames)
    unsigned[1] = b""
    attacks = {
        "unsigned": [unsigned],
        "bad_signature": [signed(bad)],
        "malformed_frames": [frames[:4], [b"garbage"], [b"<IDS|MSG>"]],
        "too_large": [signed(good)[:-1] + [b"{\"pad\": \"" + b"x" * (LIMIT // 2) + b"\"}", b"y" * (LIMIT // 2)]],
        "invalid_json": [good.serialize(good.msg("execute_request", {}))],
    }
    # invalid_json: correctly signed, unparsable content.
    bogus = list(attacks["invalid_json"][0])
    bogus[5] = b"{not json"
    bogus[1] = good.sign(bogus[2:6])
    attacks["invalid_json"] = [bogus]
    for name, msgs in attacks.items():
        for m in msgs:
            attacker.send_multipart(m)
        execute_ok(kc)  # the legitimate client keeps getting answers
    # Replay: the captured genuine message runs once, its replay is refused.
    replay = signed(good, "let replayed = 1;")
    attacker.send_multipart(replay)
    attacker.send_multipart(replay)
    execute_ok(kc)
    counts = stats(info, good)
    for name, msgs in attacks.items():
        assert counts.get(name, 0) >= len(msgs), (name, counts)
    assert counts.get("replayed") == 1, counts
    assert proc.poll() is None
    attacker.close()


def ping(info, payload=b"ping"):
    """One heartbeat round trip from a fresh REQ socket; the echoed frames or None."""
    s = zmq.Context.instance().socket(zmq.REQ)
    s.linger = 0
    s.connect(f"tcp://{info['ip']}:{info['hb_port']}")
    s.send(payload)
    echoed = s.recv_multipart() if s.poll(TIMEOUT * 1000) else None
    s.close()
    return echoed


def test_an_oversized_ping_does_not_silence_the_heartbeat(kernel):
    """Anyone reaching the heartbeat port (no key needed) sends a ping over the receive limits:
    it is refused, and the heartbeat still answers the next ping."""
    info, kc, proc = kernel
    assert ping(info) == [b"ping"]
    attacker = zmq.Context.instance().socket(zmq.DEALER)
    attacker.linger = 0
    attacker.connect(f"tcp://{info['ip']}:{info['hb_port']}")
    attacker.send_multipart([b""] + [b"x"] * 5000)  # more frames than any message may have
    attacker.send_multipart([b"", b"y" * (LIMIT + 1)])  # larger than the kernel accepts
    for _ in range(3):
        assert ping(info) == [b"ping"], "the heartbeat fell silent"
    attacker.close()
    execute_ok(kc)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_large_iopub_subscriptions_are_refused(kernel):
    """A peer that reaches the IOPub port (no key needed) sends large subscriptions, which libzmq
    would keep for as long as the peer stays (50 of 1 MiB took 2.8 GiB): the first one
    disconnects it, and the kernel goes on serving its client."""
    info, kc, proc = kernel
    before = rss_kib(proc.pid)
    # Raw ZMTP 3.0 over TCP, as a SUB peer (pyzmq's own libzmq keeps what it subscribes to as
    # well, and crashed tearing 50 MiB of them down): greeting, READY, then subscriptions.
    import socket
    import struct
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\x00") + b"\x00" * 32
    prop = b"\x0bSocket-Type" + struct.pack(">I", 3) + b"SUB"
    ready = b"\x05READY" + prop
    sent = refused = 0
    for i in range(50):
        try:
            with socket.create_connection((info["ip"], info["iopub_port"]), timeout=TIMEOUT) as t:
                t.sendall(greeting)
                t.recv(64)
                t.sendall(b"\x04" + bytes([len(ready)]) + ready)
                body = b"\x01" + bytes([65 + i % 26]) * (1 << 20)
                t.sendall(b"\x02" + struct.pack(">Q", len(body)) + body)
                sent += 1
                t.settimeout(5)
                while t.recv(65536):  # until the kernel drops the connection
                    pass
                refused += 1
        except (ConnectionError, socket.timeout):
            refused += 1
    assert sent > 0 and refused == 50, (sent, refused)
    for _ in range(5):
        execute_ok(kc)
    grown = rss_kib(proc.pid) - before
    assert grown < 64 * 1024, f"the kernel grew by {grown} KiB"
    # A refused unsigned message, so that the fixture's check of the refusal log holds.
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 2000
    s.connect(f"tcp://{info['ip']}:{info['shell_port']}")
    s.send_multipart([b"<IDS|MSG>", b"", b"{}", b"{}", b"{}", b"{}"])
    s.close()
    execute_ok(kc)
