"""A mesh in its own MESH_HOME on free ports, driven the way a user would: the mesh CLI, and supervisorctl's
commands and `mesh down` run in this process (a Python start-up each is most of their cost). Used by benchmarks
and tests, which must never touch a developer's own mesh."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from supervisor.options import ClientOptions
from supervisor.supervisorctl import Controller

from meshtrader.ops.cli import cmd_down
from meshtrader.runtime.config import Settings, load_settings
from meshtrader.runtime.supervise import Supervisor

PORT_SPAN = 80


def _ports_free(base: int) -> bool:
    for port in range(base, base + PORT_SPAN):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def first_ephemeral_port() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux's ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_base() -> int:
    """A base whose whole span (and the +99 a simulator takes) is free and below the ephemeral ports: a
    service restarting must find its port free, not taken meanwhile as the local end of some connection."""
    for _ in range(200):
        base = random.randrange(10000, first_ephemeral_port() - 200, 100)
        if _ports_free(base):
            return base
    raise RuntimeError("no free range of ports for a mesh")


class LocalMesh:
    """`run_in`: a prefix for its commands, e.g. `ip netns exec NAME` (a mesh host in a network namespace)."""

    def __init__(self, home: Path, env_overrides: dict[str, str] | None = None, run_in: Sequence[str] = ()) -> None:
        self.home = Path(home)
        self.run_in = list(run_in)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        self.env = {**clean, "MESH_HOME": str(self.home), "MESH_PORT_BASE": str(free_port_base()),
                    **(env_overrides or {})}
        mesh_env = {k[len("MESH_"):].lower(): v for k, v in self.env.items() if k.startswith("MESH_")}
        self.settings: Settings = load_settings(**mesh_env)
        self.supervisor = Supervisor(self.settings)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.run_in, sys.executable, "-m", "meshtrader", *args], env=self.env,
                              capture_output=True, stdin=subprocess.DEVNULL, text=True, check=check, timeout=180)

    def ctl(self, *args: str) -> str:
        """What `supervisorctl -c $MESH_HOME/supervisord.conf ARGS` prints: its own commands, run in this process."""
        options = ClientOptions()
        options.realize(["-c", str(self.home / "supervisord.conf"), *args])
        output = io.StringIO()
        Controller(options, stdout=output).onecmd(" ".join(options.args))
        return output.getvalue()

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def pid(self, program: str) -> int:
        return self.supervisor.processes()[program]["pid"]

    def running(self, program: str) -> bool:
        return self.supervisor.processes().get(program, {}).get("statename") == "RUNNING"

    def all_running(self) -> bool:
        processes = self.supervisor.processes()
        return bool(processes) and all(p["statename"] == "RUNNING" for p in processes.values())

    def start(self) -> None:
        result = self.cli("up", "--detach", check=False)
        if result.returncode != 0:
            raise RuntimeError(f"mesh did not start:\n{result.stdout}{result.stderr}")

    def stop(self) -> None:
        """`mesh down` run in this process: the same steps, without a Python start-up per mesh stopped
        (supervisord's socket is a file, reachable from outside a host's network namespace too)."""
        with contextlib.redirect_stdout(io.StringIO()):
            cmd_down(self.settings, argparse.Namespace())
