"""Fixtures that start real meshes: supervisord, redis-server, ZeroMQ sockets and SQLite, in a temp
MESH_HOME on free ports, so tests never touch a developer's own mesh."""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

import pytest
import zmq

from core.codec import DecodeError, UnknownTopic, decode_event
from core.config import load_settings
from core.store import Store
from core.supervise import Supervisor

PORT_SPAN = 80

# Tests describe their meshes completely; a developer's own MESH_* settings must not leak in.
for _name in [n for n in os.environ if n.startswith("MESH_")]:
    del os.environ[_name]


def _ports_free(base: int) -> bool:
    for port in range(base, base + PORT_SPAN):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_base() -> int:
    for _ in range(200):
        base = random.randrange(20000, 60000, 100)
        if _ports_free(base):
            return base
    raise RuntimeError("no free port range")


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class FillCollector:
    """Subscribes to the executor's fills from before the mesh starts (ZeroMQ connects before bind)."""

    def __init__(self, endpoint: str) -> None:
        self.fills: dict[str, object] = {}
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.connect(endpoint)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"fill")
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            if self._sock.poll(100):
                frames = self._sock.recv_multipart()
                try:
                    fill = decode_event(*frames)
                except (TypeError, UnknownTopic, *DecodeError):
                    continue  # the malformed-frame test impersonates the executor
                self.fills[fill.trade_id] = fill

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._sock.close(0)
        self._ctx.term()


class Mesh:
    """A running mesh in its own MESH_HOME; helpers to drive it the way a user would."""

    def __init__(self, home: Path, env_overrides: dict[str, str]) -> None:
        self.home = home
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        self.env = {**clean, "MESH_HOME": str(home), "MESH_PORT_BASE": str(free_port_base()), **env_overrides}
        self.settings = load_settings(home=home, port_base=int(self.env["MESH_PORT_BASE"]))
        self.supervisor = Supervisor(self.settings)
        self.collector = FillCollector(self.settings.endpoint("executor.pub"))

    def mesh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core.cli", *args], env=self.env, capture_output=True,
                              text=True, check=check, timeout=180)

    def ctl(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c",
                                 str(self.home / "supervisord.conf"), *args], env=self.env, capture_output=True,
                                text=True, timeout=60)
        return result.stdout + result.stderr

    def status(self) -> dict:
        return json.loads(self.mesh("status", "--json").stdout)

    def store(self) -> Store:
        return Store(self.settings.db_path, read_only=True)

    def query(self, sql: str, params: tuple = ()) -> list:
        store = self.store()
        try:
            return [tuple(r) for r in store.query(sql, params)]
        finally:
            store.close()

    def trade_count(self) -> int:
        return self.query("SELECT COUNT(*) FROM trades")[0][0]

    def pid(self, program: str) -> int:
        return self.supervisor.processes()[program]["pid"]

    def metrics(self, service: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.settings.http_port(service)}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, service: str, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics(service).splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                if all(f'{k}="{v}"' in line for k, v in labels.items()):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def running(self, program: str) -> bool:
        return self.supervisor.processes().get(program, {}).get("statename") == "RUNNING"

    def all_running(self) -> bool:
        processes = self.supervisor.processes()
        return bool(processes) and all(p["statename"] == "RUNNING" for p in processes.values())

    def quiesce(self) -> None:
        """Stop the feed so no new signals arrive, and let in-flight work settle."""
        assert "stopped" in self.ctl("stop", "feed")
        time.sleep(2.5)

    def start(self) -> None:
        result = self.mesh("up", "--detach", check=False)
        assert result.returncode == 0, result.stdout + result.stderr

    def stop(self) -> None:
        self.mesh("down", check=False)
        self.collector.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    home = Path(tmp_path_factory.mktemp("mesh"))
    running = Mesh(home, {"MESH_REPLAY_SPEED": "40", "MESH_LOG_LEVEL": "INFO"})
    running.start()
    yield running
    running.stop()
