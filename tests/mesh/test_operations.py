"""Operating a running mesh: the operators' controls (pause and resume, a risk limit changed at run time, each
recorded with who and when, kept across a restart of the risk guard, the restart itself counted), and its
secrets: those planted in the mesh's environment (tests/conftest.py: alert URLs with a password, the webhook's
password, the Telegram bot token, exchange API keys) and the dashboard's token appear nowhere the mesh writes,
serves or publishes once it has traded, been steered and alerted: not in its log files or any other file under
MESH_HOME, a service's /metrics, the store, Redis, the dashboard's API, `mesh status`, nor the raw frames on the
bus. And by default every socket of the mesh is ipc, or TCP on loopback."""
from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis
import zmq
from conftest import (
    ALERT_URL_PASSWORD,
    EXCHANGE_KEY,
    EXCHANGE_SECRET,
    TELEGRAM_TOKEN,
    WEBHOOK_PASSWORD,
    log_events,
    wait_for,
)
from mcp import Client
from support.bus_tap import BusTap
from support.mcp_results import error_text, payload

from meshtrader.assistant.answer import Assistant
from meshtrader.assistant.mcp_server import build_server
from meshtrader.bus import ReqClient
from meshtrader.ops.cli import set_risk_limit
from meshtrader.ops.logs import control_log, service_history
from meshtrader.persistence.hotstate import HotState
from meshtrader.runtime.config import dashboard_token
from meshtrader.runtime.log import Logger
from meshtrader.wire.messages import Approval, ApproveOrder, RiskReplies, RiskStatus, RiskStatusReply
from tools.localmesh import PORT_SPAN

TCP_LISTEN = "0A"  # a socket's state in /proc/net/tcp


def planted(mesh) -> list[str]:
    return [TELEGRAM_TOKEN, TELEGRAM_TOKEN.partition(":")[2], ALERT_URL_PASSWORD, WEBHOOK_PASSWORD, EXCHANGE_KEY,
            EXCHANGE_SECRET, dashboard_token(mesh.settings)[0]]


@pytest.fixture(scope="module", autouse=True)
def bus(mesh):
    """Every publisher's frames from the start of the module's first test, searched as they arrive."""
    tap = BusTap(mesh.settings.publisher_endpoints().values(), [s.encode() for s in planted(mesh)])
    yield tap
    tap.close()


def found_in(text: str | bytes, secrets: list[str]) -> list[str]:
    raw = text.encode() if isinstance(text, str) else text
    return [s for s in secrets if s.encode() in raw]


def files_holding(home: Path, secrets: list[str]) -> dict[str, list[str]]:
    """Every regular file under MESH_HOME (logs, the store and its forks, settings.json, supervisord.conf,
    the narrative...) but the dashboard token's own, byte for byte."""
    files = [p for p in home.rglob("*") if p.is_file() and p.name != "dashboard.token"]
    assert any(p.name == "settings.json" for p in files) and any(p.suffix == ".log" for p in files)
    return {str(p): hits for p in files if (hits := found_in(p.read_bytes(), secrets))}


def store_rows_holding(mesh, secrets: list[str]) -> dict[str, int]:
    """Per table, the rows with a secret in any column (as text: a long value spans SQLite's overflow pages,
    where a byte search of the file could miss it)."""
    holding = {}
    for (table,) in mesh.query("SELECT name FROM sqlite_master WHERE type = 'table'"):
        columns = [row[1] for row in mesh.query(f'PRAGMA table_info("{table}")')]
        where = " OR ".join(f'instr(CAST("{c}" AS TEXT), ?) > 0' for c in columns for _ in secrets)
        if count := mesh.query(f'SELECT COUNT(*) FROM "{table}" WHERE {where}', tuple(secrets) * len(columns))[0][0]:
            holding[table] = count
    return holding


def redis_entries_holding(mesh, secrets: list[str]) -> list[bytes]:
    """Every key of the mesh's Redis whose name or value (whatever its type) holds a secret."""
    server = redis.Redis.from_url(mesh.settings.effective_redis_url)
    read = {b"string": server.get, b"hash": server.hgetall, b"list": lambda k: server.lrange(k, 0, -1),
            b"set": server.smembers, b"zset": lambda k: server.zrange(k, 0, -1, withscores=True),
            b"stream": server.xrange}
    try:
        keys = list(server.scan_iter(match=f"{mesh.settings.redis_prefix}*".encode()))
        assert keys, "the mesh keeps its hot state in Redis"
        return [key for key in keys if found_in(key + repr(read[server.type(key)](key)).encode(), secrets)]
    finally:
        server.close()


def tcp_listeners(ports: range) -> set[str]:
    """The addresses TCP sockets listen on for `ports` (Linux's /proc/net/tcp and tcp6)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == TCP_LISTEN and int(port, 16) in ports:
                words = bytes.fromhex(address)  # 32-bit words in the host's (little-endian) order
                packed = b"".join(words[i:i + 4][::-1] for i in range(0, len(words), 4))
                addresses.add(str(ipaddress.ip_address(packed)))
    return addresses



def test_pause_and_a_limit_change_are_recorded_and_survive_a_risk_guard_restart(mesh):
    hot = HotState(mesh.settings.effective_redis_url, mesh.settings.redis_prefix)
    ctx = zmq.Context()
    client = ReqClient(ctx, mesh.settings.endpoint("risk.rep"), RiskReplies, 2000, 3, Logger("test", "ERROR"))

    def risk_status() -> RiskStatusReply:
        status = client.request(RiskStatus())
        assert isinstance(status, RiskStatusReply), status
        return status

    try:
        state = wait_for(lambda: (s := mesh.status())["event_time"] and s["equity"] and s, 60, "an account snapshot")
        # the mesh's own numbers, so the requests below move neither the day's baseline nor a peak
        order = dict(strategy="momentum", symbol="BTCUSDT", qty=Decimal("0.01"), price=Decimal("100000.0"),
                     strategy_equity=Decimal("50000"), strategy_open_positions=0,
                     portfolio_equity=Decimal(state["equity"]), portfolio_exposure=Decimal(0),
                     event_time=state["event_time"])

        paused = mesh.cli("pause")
        assert "trading paused" in paused.stdout and "REDUCING" in paused.stdout
        entry = client.request(ApproveOrder(request_id="c-1", side="buy", reduces=False, opens_position=True, **order))
        assert isinstance(entry, Approval) and not entry.approved and entry.rule == "paused"
        assert "paused by cli" in entry.reason and entry.trading_state == "REDUCING"
        exit_ = client.request(ApproveOrder(request_id="c-2", side="sell", reduces=True, opens_position=False, **order))
        assert isinstance(exit_, Approval) and exit_.approved and exit_.rule == "reduce_only"

        changed = mesh.cli("limit", "daily_loss_pct", "0.03")
        assert "daily_loss_pct 0.05 -> 0.03" in changed.stdout
        refused = mesh.cli("limit", "daily_loss_pct", "3%", check=False)
        assert refused.returncode == 2 and "write 0.03 for 3%" in refused.stderr
        outcome = set_risk_limit(mesh.settings, "max_trades_per_day", "1.5", "test")  # as the dashboard asks
        assert outcome.status == "refused" and "not a whole number" in outcome.message
        assert outcome.limit_values["max_trades_per_day"] == "1000"
        assert "0.03" in next(text for text in mesh.cli("limit").stdout.splitlines() if "daily_loss_pct" in text)

        recorded = {c["control"]: c for c in control_log(mesh.settings, 10)}
        assert recorded["limit_change"]["by"].startswith("cli") and recorded["pause"]["by"].startswith("cli")
        assert recorded["limit_change"]["detail"].startswith("daily_loss_pct 0.05 -> 0.03 by cli")
        assert recorded["limit_change"]["event_time"] and recorded["limit_change"]["at"] > time.time() - 120
        assert "max_trades_per_day" not in str(recorded)  # a refused change changed nothing: no record

        starts = service_history(mesh.settings, hot)["risk"]["starts"]
        old_pid = mesh.pid("risk")
        assert "started" in mesh.ctl("restart", "risk")
        wait_for(lambda: mesh.pid("risk") not in (0, old_pid) and mesh.running("risk"), 30, "the risk guard back")
        status = risk_status()
        assert status.paused and status.trading_state == "REDUCING" and "paused by cli" in status.reason
        assert status.limit_values["daily_loss_pct"] == "0.03"
        wait_for(lambda: (hot.get("risk") or {}).get("limit_values", {}).get("daily_loss_pct") == "0.03", 10,
                 "the limits in use in hot state")
        history = service_history(mesh.settings, hot)["risk"]
        assert history["starts"] == starts + 1 and history["restarts"] == starts
        assert history["last_start"] > time.time() - 60

        assert "not paused" in mesh.cli("resume").stdout
        assert not risk_status().paused
    finally:
        client.close()
        ctx.term()
        hot.close()


def test_a_reset_of_what_a_loss_limit_measures_from_says_why_when_refused_and_is_recorded(mesh):
    """`mesh reset-peak`, `mesh lift-daily-halt` and `mesh reactivate` over the wire, and the dashboard's reset
    with the token: nothing to reset is refused with why; a peak reset is applied and recorded with who."""
    wait_for(lambda: mesh.status()["equity"], 60, "an account snapshot")
    lifted = mesh.cli("lift-daily-halt", "--yes", check=False)
    assert lifted.returncode == 1 and "no daily loss halt is in force" in lifted.stderr
    back = mesh.cli("reactivate", "momentum", check=False)
    assert back.returncode == 1 and "'momentum' is not deactivated" in back.stderr
    unconfirmed = mesh.cli("reset-peak", check=False)  # no terminal to ask on
    assert unconfirmed.returncode == 2 and "confirm with --yes" in unconfirmed.stderr
    reset = mesh.cli("reset-peak", "--yes", "--reason", "a new capital plan")
    assert "portfolio peak" in reset.stdout and "trading state" in reset.stdout
    recorded = {c["control"]: c for c in control_log(mesh.settings, 10)}
    assert recorded["reset_peak"]["by"].startswith("cli")
    assert recorded["reset_peak"]["detail"].endswith(": a new capital plan")
    url, body = f"{mesh.settings.dashboard_url}api/risk/reset", {"what": "strategy", "strategy": "momentum"}
    assert httpx.post(url, json=body, timeout=10).status_code == 401
    refused = httpx.post(url, json=body, headers={"Authorization": f"Bearer {dashboard_token(mesh.settings)[0]}"},
                         timeout=10)
    assert refused.status_code == 400 and "'momentum' is not deactivated" in refused.json()["detail"]


def test_the_assistant_explains_a_refusal_of_this_replay_and_its_mcp_controls_need_the_token(mesh):
    """Paused over MCP (with the dashboard token; refused without), the replay's next entry is refused: asked why,
    the assistant cites the risk guard's record of that refusal, in-process, on the dashboard and over MCP."""
    token = dashboard_token(mesh.settings)[0]
    question = "Why was order {} rejected?"

    async def over_mcp(calls: list[tuple[str, dict]]) -> list:
        async with Client(build_server(mesh.settings)) as client:
            return [await client.call_tool(name, arguments) for name, arguments in calls]

    refused, paused = asyncio.run(over_mcp([("pause", {"on": True, "token": "not-the-token"}),
                                            ("pause", {"on": True, "token": token})]))
    assert "wrong dashboard token" in error_text(refused) and "trading paused" in payload(paused)["message"]
    try:
        since = time.time()
        order_id, risk_event = wait_for(lambda: next(iter(mesh.query(
            "SELECT o.order_id, r.id FROM orders o JOIN risk_events r ON r.request_id = o.order_id "
            "WHERE o.status = 'REJECTED' AND r.rule = 'paused' AND o.created_at >= ? ORDER BY r.id", (since,))), None),
            60, "an entry of the replay refused while paused")
    finally:
        resumed, = asyncio.run(over_mcp([("pause", {"on": False, "token": token})]))
    assert "not paused" in payload(resumed)["message"]
    cited = f"risk_events #{risk_event}"
    answer = Assistant(mesh.settings).ask(question.format(order_id))
    assert cited in [f.source for f in answer.facts] and f"{cited}]" in answer.text and "rule paused" in answer.text
    over_http = httpx.post(f"{mesh.settings.dashboard_url}api/ask", json={"question": question.format(order_id)},
                           timeout=30)
    assert over_http.status_code == 200 and cited in [f["source"] for f in over_http.json()["facts"]]
    asked, = asyncio.run(over_mcp([("ask", {"question": question.format(order_id)})]))
    assert cited in [f["source"] for f in payload(asked)["facts"]]


def test_planted_secrets_appear_nowhere_the_mesh_writes_serves_or_publishes(mesh, bus, alert_sink):
    secrets = planted(mesh)
    wait_for(lambda: bus.seen(b"fill") >= 2, 90, "trades on the bus")
    base = mesh.settings.dashboard_url.rstrip("/")
    control = {"Authorization": f"Bearer {secrets[-1]}"}  # the dashboard's token, used as the page would
    assert httpx.post(f"{base}/api/kill-switch", json={"on": True}, headers=control, timeout=10).status_code == 200
    try:
        wait_for(lambda: {p for p, body in alert_sink.received if "halted" in str(body).lower()} >= {
            "/apprise", "/hook", f"/bot{TELEGRAM_TOKEN}/sendMessage"}, 30, "the halt alerted on every channel")
        wait_for(lambda: [e for e in log_events(mesh, "alert_failed", "narrator") if e["channel"] == "json"], 30,
                 "the refused alert URL's failure logged")
        wait_for(lambda: bus.seen(b"narr"), 30, "the halt narrated on the bus")
    finally:
        assert httpx.post(f"{base}/api/kill-switch", json={"on": False}, headers=control, timeout=10).status_code == 200
    for path in ("state", "services", "controls", "narratives", "logs?service=narrator&limit=2000"):
        answer = httpx.get(f"{base}/api/{path}", timeout=10)
        assert answer.status_code == 200 and found_in(answer.text, secrets) == [], path
    assert found_in(mesh.cli("status", "--json").stdout, secrets) == []
    for service in mesh.settings.service_names():
        assert found_in(mesh.metrics(service), secrets) == [], service
    recorded = json.loads(mesh.settings.settings_file.read_text())
    assert not {"alert_urls", "alert_webhook_url"} & set(recorded)
    assert files_holding(mesh.settings.home_dir, secrets) == {}
    assert store_rows_holding(mesh, secrets) == {}
    assert redis_entries_holding(mesh, secrets) == []
    assert bus.found == [] and bus.seen(b"md.tick.") and bus.seen(b"fill") and bus.seen(b"risk.state")


def test_the_mesh_binds_ipc_sockets_and_listens_on_loopback_only(mesh):
    """MESH_TRANSPORT=ipc and MESH_HOST=127.0.0.1 unless configured: nothing reachable from another host."""
    settings = mesh.settings
    endpoints = [settings.endpoint(p.endpoint_name(kind)) for p in settings.programs() for kind in ("pub", "rep")
                 if p.offset(kind) is not None]
    for endpoint in endpoints:  # each bound by its service: a socket file in MESH_HOME
        assert endpoint.startswith(f"ipc://{settings.home_dir}/sock/"), endpoint
        assert Path(endpoint.removeprefix("ipc://")).is_socket(), endpoint
    listening = tcp_listeners(range(settings.port_base, settings.port_base + PORT_SPAN))
    assert listening == {"127.0.0.1"}  # the dashboard and every /metrics
    assert settings.effective_redis_url.startswith("unix://")
