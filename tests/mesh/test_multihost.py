"""A mesh over two hosts: two network namespaces this test makes, joined by a veth pair (tools/netns.py).
Host a runs the risk guard, the executor and one instance of the momentum worker; host b the rest, a second
momentum instance, and the PostgreSQL and Redis both reach by URL over tcp. Every ZeroMQ socket is CURVE,
with the keys of `mesh keys`. The mesh trades as one: both instances send every signal, each is ordered
once and approved once, and the books reconcile; a client without the key gets no answer from the risk
guard, which counts the refusal on its /metrics.

The test looks from outside both namespaces through what needs no address of theirs: PostgreSQL's socket
file, Redis's, supervisord's, and commands run inside a namespace (`mesh`, a fetch of /metrics)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import Mesh, wait_for
from support.debian import debian_program
from test_mesh import reconcile

from meshtrader.bus.curve import CurveKeys, write_key_directory
from meshtrader.persistence.hotstate import HotState
from meshtrader.runtime.supervise import WATCHDOG, local_paths
from tools.localmesh import LocalMesh
from tools.netns import NETWORK, HostPair, unusable
from tools.pgserver import LocalPostgres

PORT_BASE, PG_PORT, REDIS_PORT = 20000, 5432, 6379  # each namespace has ports of its own
ON_A = ("risk", "executor", "strategy_momentum")
ON_B = ("feed", "strategy_momentum", "allocator", "forks", "narrator", "dashboard")

# Run on host b: hears the executor's fills through CURVE with b's keys, prints each trade id, until stopped.
HEAR_FILLS = """import sys, zmq
from meshtrader.bus.curve import CurveKeys
from meshtrader.wire.codec import decode_event
sub = zmq.Context().socket(zmq.SUB)
CurveKeys.load(sys.argv[2]).client(sub)
sub.connect(sys.argv[1])
sub.subscribe(b"fill")
print("listening", flush=True)
while True:
    print(decode_event(*sub.recv_multipart()).trade_id, flush=True)
"""
# Run on a host: prints a URL's body (a service's /metrics).
FETCH = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
# Run on host b without any key: asks the risk guard for its status, once (an answer would take milliseconds).
ASK_WITHOUT_KEYS = """import sys, zmq
from meshtrader.bus import ReqClient
from meshtrader.runtime.log import Logger
from meshtrader.wire.messages import RiskReplies, RiskStatus
client = ReqClient(zmq.Context(), sys.argv[1], RiskReplies, 1000, 1, Logger("outsider", "ERROR"))
print("answered" if client.request(RiskStatus(src="outsider")) is not None else "no answer")
"""


class FillsHeard:
    """The executor's fills as a subscriber on host b hears them (the trade ids), known once `stop`ped."""

    def __init__(self, run_in: list[str], endpoint: str, keys: Path) -> None:
        self.process = subprocess.Popen([*run_in, sys.executable, "-c", HEAR_FILLS, endpoint, str(keys)],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "listening"
        self.fills: set[str] = set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.fills = set(self.process.communicate(timeout=10)[0].split())


class Host(LocalMesh):
    """One host's share of the mesh, seen from outside the namespaces: the store and Redis through their socket
    files, /metrics fetched from inside this host's namespace; the shared test helpers read it as they read a mesh."""

    query, trade_count, metric, quiesce, status, store = (Mesh.query, Mesh.trade_count, Mesh.metric, Mesh.quiesce,
                                                          Mesh.status, Mesh.store)

    def __init__(self, home: Path, env: dict[str, str], run_in: list[str], address: str, store_url: str,
                 redis_socket: Path) -> None:
        super().__init__(home, env, run_in)
        self.address = address
        self.settings = self.settings.model_copy(update={"db_url": store_url})
        self.hot = HotState(f"unix://{redis_socket}", self.settings.redis_prefix)
        self.collector: FillsHeard | None = None

    def metrics(self, service: str) -> str:
        """A service's /metrics: this host's instance if it runs one here."""
        address = self.address if service in self.settings.services else self.settings.addresses(service)[0]
        url = f"http://{address}:{self.settings.http_port(service)}/metrics"
        return subprocess.run([*self.run_in, sys.executable, "-c", FETCH, url], capture_output=True, text=True,
                              check=True, timeout=30).stdout


def start_redis(stack: ExitStack, host: Host, directory: Path) -> None:
    """A redis-server listening on the host's address (and on a socket file, for the checks from outside)."""
    server = str(local_paths(host.settings).redis_server)
    process = subprocess.Popen([*host.run_in, server, "--bind", host.address, "--port", str(REDIS_PORT),
                                "--protected-mode", "no", "--unixsocket", str(directory / "redis.sock"),
                                "--save", "", "--appendonly", "no", "--dir", str(directory)], stdout=subprocess.DEVNULL)
    stack.callback(lambda: (process.terminate(), process.wait(10)))
    wait_for(lambda: (directory / "redis.sock").exists(), 20, "redis-server")


def namespaces_or_skip() -> None:
    """Network namespaces need root and iproute2 (installed where missing); a machine that refuses them (a
    container without the capability) skips the test, saying why."""
    if os.geteuid() == 0:
        debian_program("ip", "iproute2")
    reason = unusable()
    if reason is not None:
        pytest.skip(f"no network namespaces here: {reason}")


def test_a_mesh_over_two_hosts_trades_once_per_signal_under_curve_and_refuses_a_client_without_keys(tmp_path):
    namespaces_or_skip()
    with ExitStack() as stack:
        hosts = stack.enter_context(HostPair())
        a, b = hosts.addresses
        keys = write_key_directory(tmp_path / "keys", ["a", "b"])
        postgres = LocalPostgres(port=PG_PORT, listen=b, trusted=f"{NETWORK}.0/24", run_in=hosts.run_in(1)).start()
        stack.callback(postgres.stop)
        postgres.create_database("mesh")
        mesh = {"MESH_TRANSPORT": "tcp", "MESH_HOST": b, "MESH_PORT_BASE": str(PORT_BASE),
                "MESH_HOSTS": json.dumps({"risk": a, "executor": a, "strategy_momentum": [a, b]}),
                "MESH_STRATEGIES": "momentum", "MESH_DB_URL": postgres.tcp_url("mesh"),
                "MESH_REDIS_URL": f"redis://{b}:{REDIS_PORT}/0", "MESH_REPLAY_SPEED": "40",
                "MESH_VALIDATION_EVERY_MIN": "100000", "MESH_REPLAY_WAIT_S": "30"}
        redis_dir = tmp_path / "redis"
        host_a, host_b = (Host(tmp_path / name, {**mesh, "MESH_SERVICES": ",".join(services),
                                                 "MESH_CURVE_KEYS": str(own)}, hosts.run_in(i), hosts.addresses[i],
                               postgres.url("mesh"), redis_dir / "redis.sock")
                          for i, (name, services, own) in enumerate((("a", ON_A, keys[0]), ("b", ON_B, keys[1]))))
        redis_dir.mkdir()
        start_redis(stack, host_b, redis_dir)
        host_b.collector = FillsHeard(hosts.run_in(1), host_b.settings.endpoint("executor.pub"), keys[1])
        stack.callback(host_b.collector.stop)
        for host in (host_a, host_b):
            stack.callback(host.stop)
        with ThreadPoolExecutor(2) as starting:
            list(starting.map(lambda host: host.start(), (host_a, host_b)))
        for host, share in ((host_a, ON_A), (host_b, ON_B)):  # each host started its share, nothing else
            assert set(host.supervisor.processes()) - {WATCHDOG} == set(share)

        wait_for(lambda: host_b.trade_count() >= 3, 60, "trades over two hosts")
        assert "max_order_pct" in host_b.cli("limit").stdout  # the CLI on host b asks the risk guard through CURVE
        outsider = subprocess.run([*hosts.run_in(1), sys.executable, "-c", ASK_WITHOUT_KEYS,
                                   host_b.settings.endpoint("risk.rep")], capture_output=True, text=True, timeout=30)
        assert outsider.stdout.strip() == "no answer", outsider.stderr
        wait_for(lambda: host_a.metric("risk", "mesh_bus_auth_failures_total") >= 1, 10, "the refusal counted")

        host_b.quiesce()
        host_b.collector.stop()
        assert reconcile(host_b) >= 3  # books = published accounts, fills heard = trades stored, an order per signal
        signals = host_b.query("SELECT COUNT(*) FROM orders")[0][0] + host_b.query("SELECT COUNT(*) FROM signals")[0][0]
        for host in (host_a, host_b):  # each instance sent signals, and the executor heard more than it acted on
            assert host.metric("strategy_momentum", "mesh_messages_out_total", kind="sig") > 0
        assert host_a.metric("executor", "mesh_messages_in_total", kind="sig") > signals
        assert not host_b.query("SELECT request_id FROM risk_events WHERE approved = 1 GROUP BY request_id "
                                "HAVING COUNT(*) > 1")  # and the risk guard approved each once
        secrets = {key for loaded in map(CurveKeys.load, keys) for key in (loaded.client_secret, loaded.server_secret)}
        for host in (host_a, host_b):  # the keys are files, referenced by path: never in a log or the settings
            written = [path.read_bytes() for path in (*host.settings.log_dir.glob("*.log"),
                                                      host.settings.settings_file)]
            assert not [key for key in secrets for text in written if key in text]
