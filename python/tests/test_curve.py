"""`kernelgate kernel --curve`: every channel encrypted with CurveZMQ, and clients admitted by
the kernel's own ZAP handler. jupyter_client (8.9+) connects with the connection file's keypair,
as its convention is, and works; a client with the server's public key but another keypair of
its own is refused; a plaintext subscriber reads nothing. With --curve-clients DIR only the
certificates in DIR (made by pyzmq's zmq.auth) are admitted. The kernel keeps serving the
admitted client throughout."""
import json
import subprocess

import pytest
import zmq
import zmq.auth
from jupyter_client import BlockingKernelClient
from jupyter_client.session import Session

from conftest import BIN, TIMEOUT, plaintext_subscriber, wait_for_connection_file

REFUSED_WITHIN_MS = 1500


@pytest.fixture
def curve_kernel(tmp_path):
    procs = []

    def start(*extra):
        conn = tmp_path / f"kernel-{len(procs)}.json"
        proc = subprocess.Popen([str(BIN), "kernel", "-f", str(conn), "--curve", *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        info = wait_for_connection_file(conn, proc)
        assert oct(conn.stat().st_mode & 0o777) == "0o600"
        return info, proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(TIMEOUT)


def jupyter_client_for(info):
    kc = BlockingKernelClient()
    kc.load_connection_info(info)
    kc.start_channels()
    return kc


def shell_request(info, public, secret):
    """A signed kernel_info_request over a CURVE DEALER with this client keypair: the reply, or
    None when nothing comes (the handshake was refused)."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.curve_serverkey = info["curve_publickey"].encode()
    s.curve_publickey, s.curve_secretkey = public, secret
    s.connect(f"tcp://{info['ip']}:{info['shell_port']}")
    session = Session(key=info["key"].encode(), signature_scheme=info["signature_scheme"])
    session.send(s, session.msg("kernel_info_request", {}))
    try:
        if not s.poll(REFUSED_WITHIN_MS):
            return None
        return session.recv(s)[1]
    finally:
        s.close()


def test_jupyter_client_with_the_files_keypair_is_admitted_and_others_are_not(curve_kernel):
    info, proc = curve_kernel()
    assert len(info["curve_publickey"]) == 40 and len(info["curve_secretkey"]) == 40
    kc = jupyter_client_for(info)
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        reply = kc.execute_interactive("6 * 7", timeout=TIMEOUT)
        assert reply["content"]["status"] == "ok"
        assert kc.is_alive(), "jupyter_client's heartbeat (a random key of its own) is answered"

        # The server's public key is not enough: another client keypair is refused.
        stranger = zmq.curve_keypair()
        assert shell_request(info, *stranger) is None
        # The file's keypair is what is admitted.
        own = (info["curve_publickey"].encode(), info["curve_secretkey"].encode())
        assert shell_request(info, *own)["msg_type"] == "kernel_info_reply"

        # Without CURVE nothing can be read from IOPub.
        sub = plaintext_subscriber(info)
        kc.execute_interactive('print("secret output")', timeout=TIMEOUT)
        assert not sub.poll(500), "a plaintext subscriber read IOPub"
        sub.close()
        assert kc.execute_interactive("1 + 1", timeout=TIMEOUT)["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
    assert proc.poll() is None


def test_curve_clients_admits_only_the_certificates_given(curve_kernel, tmp_path):
    clients = tmp_path / "clients"
    clients.mkdir()
    public_file, secret_file = zmq.auth.create_certificates(str(tmp_path), "alice")
    (clients / "alice.key").write_bytes(open(public_file, "rb").read())
    alice = zmq.auth.load_certificate(secret_file)

    info, proc = curve_kernel("--curve-clients", str(clients))
    assert shell_request(info, *alice)["msg_type"] == "kernel_info_reply"
    own = (info["curve_publickey"].encode(), info["curve_secretkey"].encode())
    assert shell_request(info, *own) is None, "the file's keypair is not on the list"
    assert shell_request(info, *zmq.curve_keypair()) is None
    assert shell_request(info, *alice)["msg_type"] == "kernel_info_reply", "alice still served"
    assert proc.poll() is None


def test_jupyter_client_requiring_encryption_launches_the_builtin_kernel(tmp_path):
    """jupyter_client's own CURVE provisioning (transport_encryption="required") accepts the
    installed rhai kernelspec and runs cells over it."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="rhai", transport_encryption="required")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        info = json.loads(open(km.connection_file).read())
        assert len(info.get("curve_publickey", "")) == 40
        reply = kc.execute_interactive("6 * 7", timeout=TIMEOUT)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("kernel", ["rhai", "python3"])
def test_serve_curve_encrypts_what_the_host_says_to_its_kernels(tmp_path, kernel):
    """`kernelgate serve --curve`: the host talks CURVE to the built-in kernel and to ipykernel,
    so another local user subscribing to a kernel's IOPub port reads nothing."""
    from hosting import Host

    host = Host(tmp_path, extra=["--curve"])
    try:
        kernel_id = host.start(kernel)["id"]
        info = json.loads((host.runtime / f"kernel-{kernel_id}.json").read_text())
        assert len(info.get("curve_publickey", "")) == 40
        sub = plaintext_subscriber(info)
        assert host.execute(kernel_id, 'print("over curve")') == ("over curve\n", "ok")
        assert not sub.poll(500), "a plaintext subscriber read IOPub"
        sub.close()
    finally:
        host.close()
