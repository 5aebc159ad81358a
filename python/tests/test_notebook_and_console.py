"""nbclient runs a notebook on the installed rhai kernelspec; jupyter console drives our kernel."""
import json
import subprocess
import sys
import time

import nbformat
import pexpect
from nbclient import NotebookClient

from conftest import BIN, TIMEOUT


def test_nbclient_executes_a_notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('let greeting = "hello";\nprint(greeting);'),
        nbformat.v4.new_code_cell("fn sq(x) { x * x }\nsq(12)"),
        nbformat.v4.new_code_cell('display_html("<i>rich</i>")'),
    ]
    NotebookClient(nb, kernel_name="rhai", timeout=TIMEOUT).execute()
    assert nb.cells[0].outputs[0]["text"] == "hello\n"
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "144"
    assert nb.cells[2].outputs[0]["data"]["text/html"] == "<i>rich</i>"


def test_jupyter_console_existing(tmp_path):
    conn = tmp_path / "kernel.json"
    kernel = subprocess.Popen([str(BIN), "kernel", "-f", str(conn)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not conn.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        console = pexpect.spawn(sys.executable, ["-m", "jupyter_console", "--existing", str(conn), "--simple-prompt"],
                                timeout=TIMEOUT, encoding="utf-8")
        console.expect(r"In \[\d+\]: ")
        console.sendline("6 * 7")
        console.expect(r"Out\[\d+\]: 42")
        console.expect(r"In \[\d+\]: ")
        console.sendline('print("from console")')
        console.expect("from console")
        console.expect(r"In \[\d+\]: ")
        console.sendline('let v = input("name? "); print("hi " + v);')
        console.expect("name\\? ")
        console.sendline("ada")
        console.expect("hi ada")
        console.expect(r"In \[\d+\]: ")
        console.terminate(force=True)
    finally:
        kernel.terminate()
        kernel.wait(TIMEOUT)
