"""Fixtures that start real meshes: supervisord, redis-server, ZeroMQ sockets and SQLite, in a temp
MESH_HOME on free ports, so tests never touch a developer's own mesh; and the fixtures tests of more than
one folder share (tests/unit: one package in-process; tests/mesh: running meshes and mesh services;
tests/live: the exchange simulator through the real ccxt)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import zmq
from support.alert_servers import AlertSink
from support.strategy_files import EVERY_BAR, readme_example
from support.tiger_contract import TigerContract

from meshtrader.domain.portfolio import Portfolio
from meshtrader.ops.status import mesh_state
from meshtrader.persistence.hotstate import HotState
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import LIVE_CONFIRMATION
from meshtrader.wire.codec import DecodeError, UnknownTopic, decode_event
from tools.localmesh import LocalMesh, free_port_base

# Tests describe their meshes completely; a developer's own MESH_* settings must not leak in.
for _name in [n for n in os.environ if n.startswith("MESH_")]:
    del os.environ[_name]


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """A ZeroMQ context for a test with real sockets in one process (inproc)."""
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `condition` until it holds (its value) or `timeout` passes. Polls are cheap (a store query, a Redis
    read): a short interval costs little CPU, where a long one adds half of itself to every wait on average."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_settled(read: Callable[[], object], timeout: float, what: str, readings: int = 3, interval: float = 0.6):
    """Wait until `read` gives the same value `readings` times running (in-flight work has landed); the value.
    The default readings span more than a second: the executor republishes its account snapshot every second."""
    seen: list = []

    def settled() -> bool:
        seen.append(read())
        return len(seen) >= readings and all(v == seen[-1] for v in seen[-readings:])

    wait_for(settled, timeout, what, interval)
    return seen[-1]


class FillCollector:
    """Subscribes to the executor's fills from before the mesh starts (ZeroMQ connects before bind), and
    counts its connections: a test that restarts the executor waits for the next before trading resumes."""

    def __init__(self, endpoint: str) -> None:
        self.fills: dict[str, object] = {}
        self.connections = 0
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED)
        self._sock.connect(endpoint)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"fill")
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        while not self._stop:
            ready = dict(poller.poll(100))
            if self._monitor in ready:
                self._monitor.recv_multipart()
                self.connections += 1
            if self._sock in ready:
                frames = self._sock.recv_multipart()
                try:
                    fill = decode_event(*frames)
                except (TypeError, UnknownTopic, *DecodeError):
                    continue  # the malformed-frame test impersonates the executor
                self.fills[fill.trade_id] = fill

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self._sock.disable_monitor()
        self._monitor.close(0)
        self._sock.close(0)
        self._ctx.term()


class Mesh(LocalMesh):
    """A running mesh plus what tests look at: the fills it published, its store, its metrics."""

    def __init__(self, home: Path, env_overrides: dict[str, str]) -> None:
        super().__init__(home, env_overrides)
        self.collector = FillCollector(self.settings.endpoint("executor.pub"))
        self.hot = HotState(self.settings.effective_redis_url, self.settings.redis_prefix)

    def status(self) -> dict:
        """What `mesh status --json` prints (its mesh_state), read in this process: tests poll it, and a reading
        then costs milliseconds, not a Python start-up (test_lifecycle and test_topology run the command)."""
        return json.loads(json.dumps(mesh_state(self.settings, self.hot)))

    def store(self) -> Store:
        return Store(self.settings.store_location, read_only=True)

    def query(self, sql: str, params: tuple = ()) -> list:
        store = self.store()
        try:
            return [tuple(r) for r in store.query(sql, params)]
        finally:
            store.close()

    def trade_count(self) -> int:
        return self.query("SELECT COUNT(*) FROM trades")[0][0]

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

    def quiesce(self) -> None:
        """Stop the feed so no new signals arrive, and wait until in-flight work has settled: the trades
        and the executor's account snapshot (republished every second) the same three readings running."""
        assert "stopped" in self.ctl("stop", "feed")
        wait_settled(lambda: (self.trade_count(), self.status().get("accounts")), 60,
                     "the mesh to settle with the feed stopped")

    def stop(self) -> None:
        super().stop()
        self.collector.close()
        self.hot.close()


@contextmanager
def running_mesh(home: Path, env_overrides: dict[str, str]) -> Iterator[Mesh]:
    """A mesh started in `home`, stopped when the block ends."""
    mesh = Mesh(home, env_overrides)
    mesh.start()
    try:
        yield mesh
    finally:
        mesh.stop()


def live_feed(sim: str, **more: str) -> dict[str, str]:
    """Settings of a paper mesh whose market data streams live from the exchange simulator."""
    return {"MESH_FEED": "live", "MESH_EXCHANGE_URL": sim, "MESH_FEED_BACKOFF_S": "0.2", **more}


TELEGRAM_TOKEN = "123456:planted-telegram-token-never-logged"
# more secrets planted in the mesh fixture's environment: tests/mesh/test_operations.py looks for them everywhere
ALERT_URL_PASSWORD = "planted-alert-url-password-0003"
WEBHOOK_PASSWORD = "planted-webhook-password-0004"
EXCHANGE_KEY, EXCHANGE_SECRET = "planted-exchange-key-0005", "planted-exchange-secret-0006"


def planted_secrets(sink: AlertSink) -> dict[str, str]:
    """Alert URLs with a password (one delivered, one refused: its failure is logged), the webhook's
    password, and exchange API keys (read in live mode only: still never to be shown)."""
    host = sink.url.removeprefix("http://")
    return {"MESH_ALERT_URLS": f"json://alerts:{ALERT_URL_PASSWORD}@{host}/apprise,"
                               f"json://alerts:{ALERT_URL_PASSWORD}@127.0.0.1:1/refused",
            "MESH_ALERT_WEBHOOK_URL": f"http://hook:{WEBHOOK_PASSWORD}@{host}/hook",
            "BINANCE_API_KEY": EXCHANGE_KEY, "BINANCE_API_SECRET": EXCHANGE_SECRET}


@pytest.fixture(scope="module")
def alert_sink():
    sink = AlertSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, alert_sink):
    home = Path(tmp_path_factory.mktemp("mesh"))
    with running_mesh(home, {**planted_secrets(alert_sink), "MESH_TELEGRAM_CHAT_ID": "42",
                          "MESH_TELEGRAM_API_URL": alert_sink.url, "TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN,"MESH_REPLAY_SPEED": "40", "MESH_LOG_LEVEL": "INFO", "MESH_VALIDATION_EVERY_MIN": "240",
                          # the fork manager's clock moves in heartbeat steps of 40 market minutes here:
                          "MESH_FORK_SHARE_S": "3600", "MESH_MAX_FORKS": "40",
                          "MESH_VALIDATION_WINDOWS_MIN": "720,1440", "MESH_VALIDATION_WINDOW_WEIGHTS": "0.6,0.4"}) as running:
        yield running


# ----- the exchange simulator (Binance's wire formats on 127.0.0.1) --------------------------------------
SIM_KEY, SIM_SECRET = "planted-sim-key-0001", "planted-sim-secret-0002"  # must never appear in a log


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    port = free_port_base() + 99
    log = open(tmp_path_factory.mktemp("sim") / "sim.log", "w")
    env = {**os.environ, "BINANCE_API_KEY": SIM_KEY, "BINANCE_API_SECRET": SIM_SECRET}
    process = subprocess.Popen([sys.executable, "-m", "meshtrader", "exchange-sim", "--port", str(port),
                                "--speed", "20"], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url), 30, "the exchange simulator")
    yield url
    process.terminate()
    process.wait(10)
    log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/admin/state", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def chaos(sim: str, **body) -> int:
    answer = httpx.post(f"{sim}/admin/chaos", json=body, timeout=5).json()
    assert answer["ok"], answer
    return answer["market_time"]


# ----- live trading against the simulator ------------------------------------------------------------
LIVE_ENV = {"MESH_MODE": "live", "MESH_LIVE_CONFIRM": LIVE_CONFIRMATION, "MESH_FEED": "live",
            "BINANCE_API_KEY": SIM_KEY, "BINANCE_API_SECRET": SIM_SECRET, "MESH_FEED_BACKOFF_S": "0.2",
            "MESH_VALIDATION_EVERY_MIN": "100000000", "MESH_LIVE_TIMEOUT_S": "2", "MESH_LIVE_CHECK_S": "0.5"}


def exchange_balances(sim: str) -> dict[str, Decimal]:
    [balances] = httpx.get(f"{sim}/admin/accounts", timeout=5).json().values()
    return {asset: Decimal(amount) for asset, amount in balances.items()}


def assert_books_are_the_exchanges(mesh: Mesh, sim: str) -> None:
    """With the feed stopped: cash and every position in the books equal the exchange's balances exactly."""
    store = mesh.store()
    try:
        books = Portfolio.rebuild(store.ledger(), store.trades())
    finally:
        store.close()
    held = exchange_balances(sim)
    assert held["USDT"] == books.cash()  # fees and prices as the exchange reported them: exact
    for asset in ("BTC", "ETH"):
        booked = sum((a.positions[f"{asset}USDT"].qty for a in books.accounts.values()
                      if f"{asset}USDT" in a.positions), Decimal(0))
        assert held.get(asset, Decimal(0)) == booked, asset


def log_events(mesh: Mesh, event: str, service: str = "executor") -> list[dict]:
    lines = (mesh.settings.log_dir / f"{service}.log").read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if f'"event": "{event}"' in line]


def order_history(mesh: Mesh, order_id: str) -> list[str]:
    return [r[0] for r in mesh.query("SELECT to_status FROM order_events WHERE order_id = ? ORDER BY seq", (order_id,))]


# ----- a strategy file outside the package (tests/unit/strategies, tests/mesh) ------------------------------
@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A directory outside the package with the README's strategy file and a small one (one per module:
    a strategy's name is defined once per process)."""
    folder = tmp_path_factory.mktemp("outside") / "my strategies"
    folder.mkdir()
    (folder / "rsi_dip.py").write_text(readme_example())
    (folder / "every_bar.py").write_text(EVERY_BAR)
    return folder


# ----- a local server holding Tiger Cloud's fork contract (tests/unit/forks, tests/mesh) ------------------
@pytest.fixture
def tiger(monkeypatch):
    contract = TigerContract("proj1", "svc-parent", "pub-key", "sec-key", polls_per_step=2)
    port = free_port_base()
    server = contract.serve(port)
    monkeypatch.setenv("TIGER_PUBLIC_KEY", "pub-key")
    monkeypatch.setenv("TIGER_SECRET_KEY", "sec-key")
    yield contract, f"http://127.0.0.1:{port}"
    server.should_exit = True
