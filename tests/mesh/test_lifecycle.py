"""`mesh up` and `mesh down` as a user runs them (real meshes: start one test at a time).

- A mesh started from another directory, with its settings in that directory's .env and a strategy
  file beside it, runs every service on those settings (recorded in $MESH_HOME/settings.json, no
  credential in it); `supervisorctl -c $MESH_HOME/supervisord.conf` reaches it from anywhere; `mesh down`
  from another shell ends the foreground `mesh up` with exit code 0.
- `mesh up --mode live` (confirmed at its prompt) then `mesh status` from a shell that knows nothing
  of it says "live"; Ctrl-C on the terminal stops the mesh and `mesh up` exits 0.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import zmq
from conftest import wait_for
from support.strategy_files import EVERY_BAR

from meshtrader.runtime.config import LIVE_CONFIRMATION, SETTINGS_FILE, load_settings
from tools.localmesh import free_port_base

DOTENV_TOKEN = "planted-dotenv-webhook-token"
SIM_KEY = "planted-live-key-0001"


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MESH_")}, **extra}


@pytest.fixture
def home():
    path = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))  # short: ipc socket paths have a length limit
    yield path
    subprocess.run([sys.executable, "-m", "meshtrader", "down"], env=clean_env(MESH_HOME=str(path)),
                   capture_output=True, timeout=120)
    shutil.rmtree(path, ignore_errors=True)


def mesh(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    """A `mesh` command from a shell that knows only MESH_HOME."""
    return subprocess.run([sys.executable, "-m", "meshtrader", *args], env=clean_env(MESH_HOME=str(home)), cwd=cwd,
                          capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def test_a_mesh_started_elsewhere_runs_on_its_recorded_settings_and_mesh_down_ends_it_cleanly(tmp_path, home):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "every_bar.py").write_text(EVERY_BAR)
    (elsewhere / ".env").write_text(
        "MESH_STRATEGY_FILES=every_bar.py\nMESH_STRATEGIES=momentum,every_bar\nMESH_SYMBOLS=BTCUSDT\n"
        f"MESH_REPLAY_SPEED=20\nMESH_ALERT_WEBHOOK_URL=http://127.0.0.1:9/hook/{DOTENV_TOKEN}\n")
    env = clean_env(MESH_HOME=str(home), MESH_PORT_BASE=str(free_port_base()))
    out = tmp_path / "up.log"
    with open(out, "w") as log:
        up = subprocess.Popen([sys.executable, "-m", "meshtrader", "up"], cwd=elsewhere, env=env, stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "supervisorctl:" in out.read_text() or up.poll() is not None, 150, "the mesh up")
        assert up.poll() is None, out.read_text()
        printed = re.search(r"^supervisorctl: (.+)$", out.read_text(), re.M).group(1)
        assert f"-c {home}/supervisord.conf status" in printed

        # every service got the .env's settings from settings.json; none of it is a credential
        recorded = json.loads((home / SETTINGS_FILE).read_text())
        assert recorded["strategies"] == ["momentum", "every_bar"]
        assert recorded["strategy_files"] == [str(elsewhere / "every_bar.py")]
        for text in ((home / SETTINGS_FILE).read_text(), (home / "supervisord.conf").read_text()):
            assert DOTENV_TOKEN not in text
        settings = load_settings(recorded=True, home=home)
        ctx = zmq.Context()
        signals = ctx.socket(zmq.SUB)
        signals.connect(settings.endpoint("strategy.every_bar.pub"))
        signals.setsockopt(zmq.SUBSCRIBE, b"sig.every_bar")
        try:
            assert signals.poll(60_000), "the file's strategy signals in the mesh"
        finally:
            signals.close(0)
            ctx.term()
        status = json.loads(mesh("status", "--json", home=home, cwd=tmp_path).stdout)
        assert set(status["services"]) >= {"strategy_momentum", "strategy_every_bar"}
        assert wait_for(lambda: all(s["healthy"] for s in json.loads(
            mesh("status", "--json", home=home, cwd=tmp_path).stdout)["services"].values()), 60, "all healthy")
        # credentials reach the services through the environment (this directory's .env), not a file
        narrator = int(re.search(r"narrator\s+RUNNING\s+pid (\d+)", subprocess.run(
            shlex.split(printed), capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=60
        ).stdout).group(1))
        environ = Path(f"/proc/{narrator}/environ").read_bytes().split(b"\0")
        assert f"MESH_ALERT_WEBHOOK_URL=http://127.0.0.1:9/hook/{DOTENV_TOKEN}".encode() in environ

        down = mesh("down", home=home, cwd=tmp_path)
        assert down.returncode == 0 and "mesh stopped" in down.stdout
        assert up.wait(60) == 0, out.read_text()  # `make run` would end without "make: *** Error 1"
        assert "mesh stopped" in out.read_text() and "supervisord has died" not in out.read_text()
        assert not (home / SETTINGS_FILE).exists()
    finally:
        if up.poll() is None:
            up.kill()


def test_mesh_up_live_then_status_says_live_and_ctrl_c_exits_0(tmp_path, home):
    with socket.socket() as s:  # an exchange that is not there: the mesh comes up and retries it
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = clean_env(MESH_HOME=str(home), MESH_PORT_BASE=str(free_port_base()), MESH_STRATEGIES="momentum",
                    MESH_SYMBOLS="BTCUSDT", MESH_FEED_BACKOFF_S="5", BINANCE_API_KEY=SIM_KEY,
                    BINANCE_API_SECRET="planted-live-secret-0002")
    argv = [sys.executable, "-m", "meshtrader", "up", "--mode", "live", "--feed", "live", "--exchange-url",
            f"http://127.0.0.1:{closed}"]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: `mesh up` in the foreground of its own terminal
        os.chdir(tmp_path)
        os.execve(sys.executable, argv, env)
    output = bytearray()

    def read(seconds: float = 0.2) -> str:
        while select.select([terminal], [], [], seconds)[0]:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:
                break
            if not chunk:
                break
            output.extend(chunk)
            seconds = 0
        return output.decode(errors="replace")

    try:
        wait_for(lambda: "to go on:" in read(), 60, "the live confirmation prompt")
        os.write(terminal, f"{LIVE_CONFIRMATION}\n".encode())
        wait_for(lambda: "supervisorctl:" in read() or "did not come up" in output.decode(errors="replace"), 150,
                 "the live mesh up")
        assert "mode: live" in read() and "mesh up:" in read(), read()

        status = mesh("status", "--json", home=home, cwd=tmp_path)  # a shell without MESH_MODE
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["mode"] == "live"
        assert SIM_KEY not in (home / SETTINGS_FILE).read_text()
        assert json.loads((home / SETTINGS_FILE).read_text())["live_confirm"] == LIVE_CONFIRMATION

        os.write(terminal, b"\x03")  # Ctrl-C on the terminal: SIGINT to its foreground process group
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            read()
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                break
        else:
            raise AssertionError("mesh up did not stop after Ctrl-C:\n" + read())
        assert os.WIFEXITED(code) and os.WEXITSTATUS(code) == 0, read()
        assert "mesh stopped" in read() and "Traceback" not in read()
        assert not (home / "supervisor.sock").exists() and not (home / SETTINGS_FILE).exists()
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(terminal)
