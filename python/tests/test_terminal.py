"""`kernelgate kernel` run by hand in a terminal (its stdin a pty): Ctrl-C during a cell only
interrupts the cell; Ctrl-C at an idle kernel stops it cleanly (exit 0, connection file gone).
Launched by Jupyter (stdin not a terminal), SIGINT always means interrupt: see
test_jupyter_client.test_interrupt_by_signal."""
import os
import signal
import subprocess
import time

from jupyter_client import BlockingKernelClient

from conftest import BIN, TIMEOUT, wait_for_connection_file


def wait_iopub(kc, parent, state):
    deadline = time.monotonic() + TIMEOUT
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if (msg["parent_header"].get("msg_id") == parent and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == state):
            return


def test_ctrl_c_in_a_terminal_interrupts_a_cell_then_stops_the_idle_kernel(tmp_path):
    conn = tmp_path / "kernel.json"
    leader, follower = os.openpty()
    proc = subprocess.Popen([str(BIN), "kernel", "-f", str(conn)], stdin=follower,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(follower)
    kc = BlockingKernelClient()
    try:
        kc.load_connection_info(wait_for_connection_file(conn, proc))
        kc.start_channels()
        kc.wait_for_ready(timeout=TIMEOUT)

        cell = kc.execute("let n = 0; loop { n += 1; }")
        wait_iopub(kc, cell, "busy")
        proc.send_signal(signal.SIGINT)
        reply = kc.get_shell_msg(timeout=TIMEOUT)
        assert reply["parent_header"]["msg_id"] == cell
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "Interrupted"
        wait_iopub(kc, cell, "idle")
        assert proc.poll() is None, "Ctrl-C during a cell stopped the kernel"

        time.sleep(0.2)  # the kernel marks itself idle just after it says so
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0
        assert not conn.exists(), "connection file left behind"
    finally:
        kc.stop_channels()
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        os.close(leader)


def test_ipc_transport_with_jupyter_client(tmp_path):
    """`kernelgate kernel --transport ipc`: Unix sockets named IP-PORT in a private directory,
    which jupyter_client reaches from the connection file alone."""
    sockets = tmp_path / "sockets"
    sockets.mkdir(mode=0o700)
    conn = tmp_path / "kernel.json"
    proc = subprocess.Popen([str(BIN), "kernel", "-f", str(conn), "--transport", "ipc",
                             "--ip", str(sockets / "kg")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    kc = BlockingKernelClient()
    try:
        info = wait_for_connection_file(conn, proc)
        assert info["transport"] == "ipc"
        assert info["ip"] == str(sockets / "kg")
        names = sorted(p.name for p in sockets.iterdir())
        assert len(names) == 5 and all(n.startswith("kg-") for n in names), names
        kc.load_connection_info(info)
        kc.start_channels()
        kc.wait_for_ready(timeout=TIMEOUT)
        reply = kc.execute_interactive("6 * 7", timeout=TIMEOUT)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        proc.terminate()
        assert proc.wait(TIMEOUT) == 0
    assert not conn.exists(), "connection file left behind"
    assert not list(sockets.iterdir()), "socket files left behind"
