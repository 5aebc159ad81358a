"""`kernelgate kernelspec install --user` puts the rhai kernelspec where Jupyter looks, and
`kernelgate kernelspec list --json` finds the same kernelspecs, in the same places, as
`jupyter kernelspec list --json` (both given the same environment)."""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import BIN, TIMEOUT

VENV = Path(sys.prefix)


def clean_env(home):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "XDG_")) and k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["HOME"] = str(home)
    env["VIRTUAL_ENV"] = str(VENV)  # jupyter looks in sys.prefix, which is the venv
    return env


def listing(cmd, env):
    out = subprocess.run(cmd + ["list", "--json"], env=env, capture_output=True, timeout=TIMEOUT,
                         check=True)
    specs = json.loads(out.stdout)["kernelspecs"]
    return {name: str(Path(s["resource_dir"]).resolve()) for name, s in specs.items()}


def test_install_user_and_list_match_jupyter(tmp_path):
    env = clean_env(tmp_path)
    out = subprocess.run([str(BIN), "kernelspec", "install", "--user"], env=env,
                         capture_output=True, timeout=TIMEOUT, check=True)
    installed = tmp_path / ".local/share/jupyter/kernels/rhai"
    assert str(installed) in out.stdout.decode()
    spec = json.loads((installed / "kernel.json").read_text())
    assert spec["language"] == "rhai" and "{connection_file}" in spec["argv"]

    ours = listing([str(BIN), "kernelspec"], env)
    theirs = listing([str(VENV / "bin/jupyter-kernelspec")], env)
    assert ours == theirs
    assert ours["rhai"] == str(installed.resolve())
    assert "python3" in ours, ours

    # With JUPYTER_PATH, a spec found there comes before the user's of the same name.
    other = tmp_path / "elsewhere"
    subprocess.run([str(BIN), "kernelspec", "install", "--prefix", str(other)], env=env,
                   capture_output=True, timeout=TIMEOUT, check=True)
    env["JUPYTER_PATH"] = str(other / "share/jupyter")
    ours = listing([str(BIN), "kernelspec"], env)
    assert ours == listing([str(VENV / "bin/jupyter-kernelspec")], env)
    assert ours["rhai"] == str((other / "share/jupyter/kernels/rhai").resolve())
