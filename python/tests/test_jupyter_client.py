"""jupyter_client's BlockingKernelClient drives kernelgate's built-in kernel."""
import queue
import signal
import threading
import time

import pytest

from conftest import TIMEOUT


def run(kc, code, allow_stdin=False, **kw):
    """Executes code and returns (reply, iopub messages of this request until idle)."""
    msg_id = kc.execute(code, allow_stdin=allow_stdin, **kw)
    outputs = []
    deadline = time.monotonic() + TIMEOUT
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        outputs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    reply = kc.get_shell_msg(timeout=TIMEOUT)
    assert reply["parent_header"]["msg_id"] == msg_id
    return reply, outputs


def stream_texts_until_idle(kc, msg_id):
    """The stream texts of request `msg_id`, read from IOPub until its idle status."""
    texts = []
    while True:
        msg = kc.get_iopub_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            texts.append(msg["content"]["text"])
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return texts


def of_type(outputs, t):
    return [m for m in outputs if m["msg_type"] == t]


def test_kernel_info(rhai_kernel):
    _, kc = rhai_kernel
    reply = kc.kernel_info(reply=True, timeout=TIMEOUT)
    c = reply["content"]
    assert c["status"] == "ok"
    assert c["protocol_version"].startswith("5.")
    assert c["language_info"]["name"] == "rhai"
    assert c["implementation"] == "kernelgate-rhai"


def test_execute_stream_result_and_state(rhai_kernel):
    _, kc = rhai_kernel
    reply, out = run(kc, 'let x = 40; print("hello");')
    assert reply["content"]["status"] == "ok"
    assert [m["content"]["text"] for m in of_type(out, "stream")] == ["hello\n"]
    assert of_type(out, "execute_input")[0]["content"]["code"].startswith("let x")
    states = [m["content"]["execution_state"] for m in of_type(out, "status")]
    assert states == ["busy", "idle"]
    reply, out = run(kc, "x + 2")
    result = of_type(out, "execute_result")[0]["content"]
    assert result["data"]["text/plain"] == "42"
    assert result["execution_count"] == reply["content"]["execution_count"]


def test_a_cell_printing_in_a_loop_loses_nothing(rhai_kernel):
    """20,000 prints reach a client that reads IOPub at Python's pace: the kernel gathers stream
    text into few messages instead of 20,000, which libzmq's queues of 1,000 would drop, and
    keeps stdout and stderr in order."""
    _, kc = rhai_kernel
    reply, out = run(kc, 'for i in 0..20000 { print(i); } debug("end"); print("after");')
    assert reply["content"]["status"] == "ok"
    streams = of_type(out, "stream")
    stdout = "".join(m["content"]["text"] for m in streams if m["content"]["name"] == "stdout")
    assert stdout == "".join(f"{i}\n" for i in range(20000)) + "after\n"
    assert len(streams) < 200, len(streams)
    names = [m["content"]["name"] for m in streams]
    assert names[-2:] == ["stderr", "stdout"], names[-3:]


def test_execute_error(rhai_kernel):
    _, kc = rhai_kernel
    reply, out = run(kc, "let y = 1;\nundefined_thing + 1")
    assert reply["content"]["status"] == "error"
    err = of_type(out, "error")[0]["content"]
    assert err["ename"] == "NameError"
    assert "undefined_thing" in err["evalue"]
    assert any("line 2" in line for line in err["traceback"])


def test_runaway_cell_is_stopped(rhai_kernel):
    _, kc = rhai_kernel
    reply, out = run(kc, 'let s = "x"; loop { s += s; }')
    assert reply["content"]["status"] == "error"
    assert of_type(out, "error")[0]["content"]["ename"] == "DataTooLarge"


@pytest.mark.parametrize("code, ename", [
    ("fn deeper(n) { deeper(n + 1) } deeper(0)", "StackOverflow"),
    ("let a = []; a.pad(2000000, 0);", "DataTooLarge"),
    # Each string is small, their sum is not: sizes count across nested values.
    ('let s = "x"; for i in 0..20 { s += s; } let a = []; a.pad(20, s);', "DataTooLarge"),
], ids=["call-depth", "array", "strings-in-array"])
def test_cells_past_a_limit_are_stopped_and_the_kernel_goes_on(rhai_kernel, code, ename):
    _, kc = rhai_kernel
    reply, out = run(kc, code)
    assert reply["content"]["status"] == "error"
    assert of_type(out, "error")[0]["content"]["ename"] == ename
    reply, out = run(kc, "1 + 1")
    assert of_type(out, "execute_result")[0]["content"]["data"]["text/plain"] == "2"


def test_operation_limit_stops_a_loop():
    """`--max-operations` (here 100,000 in the kernelspec) ends a loop nothing else would."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="rhai-few-operations", startup_timeout=TIMEOUT)
    try:
        reply, out = run(kc, "let n = 0; loop { n += 1; }")
        assert reply["content"]["status"] == "error"
        assert of_type(out, "error")[0]["content"]["ename"] == "OperationLimitExceeded"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_memory_limit_counts_every_cell_and_the_kernel_recovers():
    """Each cell stays under Rhai's per-value limits (8 MiB strings), but the variables they
    keep add up: past the kernel's 64 MiB a cell is stopped with MemoryLimitExceeded, the kernel
    goes on, and freeing variables makes room again."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="rhai-small-memory", startup_timeout=TIMEOUT)
    try:
        assert run(kc, 'let big = "x"; for i in 0..23 { big += big; } big.len()')[0][
            "content"]["status"] == "ok"
        stopped = None
        for i in range(12):
            reply, out = run(kc, f'let v{i} = big + "{i}"; v{i}.len()')
            if reply["content"]["status"] == "error":
                stopped = (i, of_type(out, "error")[0]["content"])
                break
        assert stopped, "twelve 8 MiB strings fit in 64 MiB"
        i, err = stopped
        assert err["ename"] == "MemoryLimitExceeded", err
        assert "64 MiB" in err["evalue"]
        assert i >= 4, f"stopped after {i} cells: the limit counts more than the variables"
        # Over the limit (the stopped cell's variable was bound), small cells still run and
        # can free what earlier ones kept.
        assert run(kc, "1 + 1")[0]["content"]["status"] == "ok", "small cells still run"
        freed = "; ".join(f"v{n} = ()" for n in range(i + 1))
        assert run(kc, freed)[0]["content"]["status"] == "ok"
        reply, out = run(kc, 'let again = big + "!"; again.len()')
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_functions_persist_complete_inspect(rhai_kernel):
    _, kc = rhai_kernel
    run(kc, "fn double(n) { n * 2 }\nlet counter = 5;")
    _, out = run(kc, "double(counter)")
    assert of_type(out, "execute_result")[0]["content"]["data"]["text/plain"] == "10"
    reply = kc.complete("cou", 3, reply=True, timeout=TIMEOUT)["content"]
    assert "counter" in reply["matches"] and reply["cursor_start"] == 0 and reply["cursor_end"] == 3
    reply = kc.complete("dou", 3, reply=True, timeout=TIMEOUT)["content"]
    assert "double" in reply["matches"]
    reply = kc.inspect("counter", 3, reply=True, timeout=TIMEOUT)["content"]
    assert reply["found"] and "i64" in reply["data"]["text/plain"]
    reply = kc.inspect("zzz_none", 3, reply=True, timeout=TIMEOUT)["content"]
    assert not reply["found"]


def test_is_complete(rhai_kernel):
    _, kc = rhai_kernel
    def status(code):
        msg_id = kc.is_complete(code)
        reply = kc.get_shell_msg(timeout=TIMEOUT)
        assert reply["parent_header"]["msg_id"] == msg_id
        return reply["content"]["status"]

    assert status("1 + 1") == "complete"
    assert status("fn f() {") == "incomplete"
    assert status("let = = 1;") == "invalid"


def test_history(rhai_kernel):
    _, kc = rhai_kernel
    run(kc, "1 + 1")
    run(kc, "2 + 2")
    reply = kc.history(hist_access_type="tail", n=2, reply=True, timeout=TIMEOUT)["content"]
    assert [h[2] for h in reply["history"]] == ["1 + 1", "2 + 2"]
    reply = kc.history(hist_access_type="search", pattern="2*", reply=True, timeout=TIMEOUT)["content"]
    assert [h[2] for h in reply["history"]] == ["2 + 2"]


def test_a_costly_history_search_is_refused_and_the_kernel_serves_on(rhai_kernel):
    _, kc = rhai_kernel
    run(kc, "// " + "a" * 300_000)
    # Glob matching costs pattern x text here: 300 million steps, over the kernel's budget.
    costly = "*" + "a" * 1000 + "b"
    reply = kc.history(hist_access_type="search", pattern=costly, reply=True, timeout=120)["content"]
    assert reply["status"] == "error"
    assert "too costly" in reply["evalue"]
    reply = kc.history(hist_access_type="search", pattern="a" * 1025, reply=True, timeout=TIMEOUT)["content"]
    assert reply["status"] == "error"
    assert "longer than 1024" in reply["evalue"]
    reply = kc.history(hist_access_type="search", pattern="// a*", reply=True, timeout=TIMEOUT)["content"]
    assert reply["status"] == "ok" and len(reply["history"]) == 1


def test_input_over_stdin(rhai_kernel):
    _, kc = rhai_kernel
    msg_id = kc.execute('let name = input("who? "); print("hi " + name);', allow_stdin=True)
    req = kc.get_stdin_msg(timeout=TIMEOUT)
    assert req["msg_type"] == "input_request"
    assert req["content"]["prompt"] == "who? "
    assert req["parent_header"]["msg_id"] == msg_id
    kc.input("ada")
    reply = kc.get_shell_msg(timeout=TIMEOUT)
    assert reply["content"]["status"] == "ok"
    texts = stream_texts_until_idle(kc, msg_id)
    assert texts == ["hi ada\n"]


def test_only_the_client_asked_may_answer_an_input_request(rhai_kernel):
    """Another client of the same kernel sends an input_reply (without a parent header, as
    jupyter_client does) while A's cell waits for a password: it is ignored, A's answer counts."""
    km, kc = rhai_kernel
    from jupyter_client import BlockingKernelClient
    other = BlockingKernelClient()  # a session (and routing identity) of its own
    other.load_connection_info(km.get_connection_info())
    other.start_channels()
    try:
        other.wait_for_ready(timeout=TIMEOUT)
        msg_id = kc.execute('let pw = input("secret? "); print("got " + pw);', allow_stdin=True)
        req = kc.get_stdin_msg(timeout=TIMEOUT)
        assert req["parent_header"]["msg_id"] == msg_id
        other.input("from-the-other-client")
        time.sleep(0.5)
        kc.input("mine")
        reply = kc.get_shell_msg(timeout=TIMEOUT)
        assert reply["content"]["status"] == "ok"
        texts = stream_texts_until_idle(kc, msg_id)
        assert texts == ["got mine\n"]
    finally:
        other.stop_channels()


def test_input_refused_without_stdin(rhai_kernel):
    _, kc = rhai_kernel
    reply, out = run(kc, 'input("x")', allow_stdin=False)
    assert reply["content"]["status"] == "error"


def _interrupt_long_loop(km, kc):
    msg_id = kc.execute("let i = 0; loop { i += 1; }")
    # Wait until it is running.
    while True:
        msg = kc.get_iopub_msg(timeout=TIMEOUT)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_input":
            break
    time.sleep(0.2)
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=TIMEOUT)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "Interrupted"
    # The kernel still works afterwards.
    reply, out = run(kc, "7 * 6")
    assert of_type(out, "execute_result"), (reply, out)
    assert of_type(out, "execute_result")[0]["content"]["data"]["text/plain"] == "42"


def test_interrupt_by_message(rhai_kernel):
    km, kc = rhai_kernel
    assert km.kernel_spec.interrupt_mode == "message"
    _interrupt_long_loop(km, kc)


def test_interrupt_by_signal():
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="rhai-signal", startup_timeout=TIMEOUT)
    try:
        assert km.kernel_spec.interrupt_mode == "signal"
        _interrupt_long_loop(km, kc)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_shutdown_request_ends_the_kernel(rhai_kernel):
    km, kc = rhai_kernel
    msg_id = kc.shutdown()
    reply = kc.get_control_msg(timeout=TIMEOUT)
    assert reply["msg_type"] == "shutdown_reply"
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"] == {"status": "ok", "restart": False}
    deadline = time.monotonic() + TIMEOUT
    while km.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not km.is_alive()


def test_restart_kernel_through_jupyter_client(rhai_kernel):
    """KernelManager.restart_kernel sends shutdown_request(restart=True), waits for the process to
    end and starts a new one on the same ports and key; state is gone, the client reconnects."""
    km, kc = rhai_kernel
    assert run(kc, "let kept = 41;")[0]["content"]["status"] == "ok"
    old_pid = km.provisioner.pid
    km.restart_kernel(now=False)
    assert km.provisioner.pid != old_pid
    kc.wait_for_ready(timeout=TIMEOUT)
    reply, outputs = run(kc, "kept")
    assert reply["content"]["status"] == "error", reply["content"]
    reply, outputs = run(kc, "1 + 1")
    assert of_type(outputs, "execute_result")[0]["content"]["data"]["text/plain"] == "2"


def test_cells_queued_behind_a_cell_longer_than_the_window_all_run():
    """"Run all" sends every cell at once. A cell that runs longer than the kernel's replay window
    must not make the kernel refuse the cells queued behind it as stale (they would never get a
    reply, and the notebook would hang): freshness counts from when a request arrived."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="rhai-short-window", startup_timeout=TIMEOUT)
    try:
        started = time.monotonic()
        ids = [kc.execute("let x = 0; for i in 0..3000000 { x += i; } x")]
        ids += [kc.execute(f"{n} * 2") for n in range(3)]
        replies = {}
        deadline = time.monotonic() + 120
        while len(replies) < len(ids):
            msg = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            replies[msg["parent_header"]["msg_id"]] = msg
            if msg["parent_header"]["msg_id"] == ids[0]:
                long_cell = time.monotonic() - started
        assert long_cell > 1.0, f"the long cell took {long_cell:.2f} s: not longer than the window"
        assert [replies[i]["content"]["status"] for i in ids] == ["ok"] * 4
        counts = [replies[i]["content"]["execution_count"] for i in ids]
        assert counts == sorted(counts) and len(set(counts)) == 4
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
