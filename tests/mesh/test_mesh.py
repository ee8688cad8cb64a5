"""The whole mesh under supervisord, end to end: it trades, reconciles to the last digit, survives
restarts and kill -9 without losing or duplicating a trade, and shrugs off malformed frames."""
from __future__ import annotations

import json
import os
import re
import signal
import time
from decimal import Decimal

import pytest
import zmq
from conftest import wait_for, wait_settled

from meshtrader.bus import ReqClient
from meshtrader.domain.portfolio import Portfolio
from meshtrader.domain.regime import REGIMES
from meshtrader.runtime.config import dashboard_token
from meshtrader.runtime.log import Logger
from meshtrader.wire.codec import encode
from meshtrader.wire.messages import (
    Approval,
    ApproveOrder,
    CandlesReply,
    ErrorReply,
    FeedReplies,
    ForkReplies,
    ListForks,
    RecentCandles,
    RiskReplies,
    RiskStatus,
    RiskStatusReply,
    Tick,
)

SERVICES = {"feed", "strategy_momentum", "strategy_macd", "allocator", "risk", "executor", "forks", "narrator",
            "dashboard", "redis"}


def reconcile(mesh) -> int:
    """Books rebuilt from the store equal the executor's published account, and fills seen = trades stored."""
    store = mesh.store()
    try:
        rebuilt = Portfolio.rebuild(store.ledger(), store.trades())
        trade_ids = {r[0] for r in store.query("SELECT trade_id FROM trades")}
        per_signal = store.query("SELECT COUNT(*) FROM orders GROUP BY signal_id HAVING COUNT(*) > 1")
    finally:
        store.close()
    assert not per_signal, "a signal produced more than one order"
    account = mesh.status()["accounts"]
    assert {a["strategy"] for a in account} == set(rebuilt.accounts)
    for published in account:
        books = rebuilt.accounts[published["strategy"]]
        assert Decimal(published["cash"]) == books.cash
        marked = sum((Decimal(p["qty"]) * Decimal(p["last_price"]) for p in published["positions"]), Decimal(0))
        assert Decimal(published["cash"]) + marked == Decimal(published["equity"])
        held = {p["symbol"]: Decimal(p["qty"]) for p in published["positions"]}
        assert held == {s: p.qty for s, p in books.positions.items() if p.qty}
    wait_for(lambda: set(mesh.collector.fills) == trade_ids, 10, "fills seen to equal trades stored")
    return len(trade_ids)


def test_mesh_trades_and_reconciles(mesh):
    assert mesh.all_running()
    wait_for(lambda: mesh.trade_count() >= 5, 60, "the first trades")
    status = mesh.status()
    assert status["mode"] == "paper"
    assert set(status["services"]) == SERVICES
    for name, service in status["services"].items():
        assert service["state"] == "RUNNING", name
        assert service["healthy"] is True, name
    assert set(status) >= {"mode", "services", "equity", "cash", "positions", "trades", "allocations", "trading_state"}
    assert status["trading_state"] == "ACTIVE"
    assert sum(status["allocations"].values()) == pytest.approx(100.0) and set(status["allocations"]) == {"momentum",
                                                                                                      "macd"}
    for position in status["positions"]:
        assert set(position) >= {"strategy", "symbol", "qty", "avg_price", "last_price", "unrealized_pnl"}
    funded = sum((Decimal(amount) for (amount,) in mesh.query("SELECT amount FROM ledger")), Decimal(0))
    assert Decimal(status["pnl"]) + funded == Decimal(status["equity"])  # P&L: equity less the capital
    assert sum(Decimal(a["pnl"]) for a in status["accounts"]) == Decimal(status["pnl"])  # each strategy's adds up
    assert all(a["active"] and a["deactivated_because"] is None for a in status["accounts"])
    [(filled,)] = mesh.query("SELECT order_id FROM orders WHERE status='FILLED' LIMIT 1")
    steps = mesh.query("SELECT from_status, to_status FROM order_events WHERE order_id=? ORDER BY seq", (filled,))
    assert steps == [("NEW", "SUBMITTED"), ("SUBMITTED", "ACCEPTED"), ("ACCEPTED", "FILLED")]
    reconcile_after_more_trades(mesh, 5)


def reconcile_after_more_trades(mesh, trades_before: int) -> None:
    wait_for(lambda: mesh.trade_count() > trades_before, 60, "more trades")
    mesh.quiesce()
    try:
        reconcile(mesh)
    finally:
        mesh.ctl("start", "feed")


def books(mesh) -> list:
    """Cash and positions per strategy (not marks: those are market data, not books)."""
    return [(a["strategy"], a["cash"], [(p["symbol"], p["qty"], p["avg_price"]) for p in a["positions"]])
            for a in mesh.status()["accounts"]]


def test_restart_executor_keeps_books(mesh):
    mesh.quiesce()
    before = books(mesh)
    trades_before = mesh.trade_count()
    old_pid = mesh.pid("executor")
    assert "started" in mesh.ctl("restart", "executor")
    wait_for(lambda: mesh.pid("executor") != old_pid and mesh.running("executor"), 30, "executor back")
    # the restarted executor's first account snapshot: a restart alone must not change the books
    wait_for(lambda: books(mesh) == before, 30, "the restarted executor's books to equal those before")
    assert mesh.trade_count() == trades_before
    mesh.ctl("start", "feed")
    reconcile_after_more_trades(mesh, trades_before)


def test_kill_9_strategy_worker_and_risk_guard(mesh):
    for program in ("strategy_momentum", "risk"):
        old_pid = mesh.pid(program)
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda p=program, old=old_pid: mesh.pid(p) not in (0, old) and mesh.all_running(), 30, f"{program} back")
    wait_for(lambda: all(s["healthy"] for s in mesh.status()["services"].values()), 15, "every service healthy")
    reconcile_after_more_trades(mesh, mesh.trade_count())


def test_executor_refuses_to_trade_without_risk_guard(mesh):
    def refused() -> int:
        return mesh.query("SELECT COUNT(*) FROM orders WHERE status='REJECTED' AND reason LIKE 'risk_unavailable%'")[0][0]

    assert "stopped" in mesh.ctl("stop", "risk")
    try:  # once one order was refused, whatever was approved before the stop has landed
        first = wait_for(refused, 90, "an order refused for want of a risk guard")
        trades = mesh.trade_count()
        wait_for(lambda: refused() > first, 90, "another order refused")
        assert mesh.trade_count() == trades, "no trade may happen while the risk guard is down"
    finally:
        mesh.ctl("start", "risk")
    wait_for(mesh.all_running, 30, "risk guard back")


def test_risk_guard_rules_over_the_wire(mesh):
    ctx = zmq.Context()
    client = ReqClient(ctx, mesh.settings.endpoint("risk.rep"), RiskReplies, 2000, 3, Logger("test", "ERROR"))
    order = dict(request_id="t-1", strategy="momentum", symbol="BTCUSDT", side="buy", qty=Decimal("1"),
                 price=Decimal("100000"), reduces=False, opens_position=True, strategy_equity=Decimal("50000"),
                 strategy_open_positions=0, portfolio_equity=Decimal("100000"), portfolio_exposure=Decimal("0"),
                 event_time=int(time.time() * 1000))
    try:
        oversized = client.request(ApproveOrder(**order))
        assert isinstance(oversized, Approval) and not oversized.approved and oversized.rule == "max_order_size"
        assert "exceeds 20" in oversized.reason
        assert "kill switch ON" in mesh.cli("kill-switch", "on").stdout
        assert mesh.status()["trading_state"] == "HALTED" or wait_for(
            lambda: mesh.status()["trading_state"] == "HALTED", 5, "HALTED in status")
        halted = client.request(ApproveOrder(**{**order, "qty": Decimal("0.01"), "request_id": "t-2"}))
        assert isinstance(halted, Approval) and halted.rule == "kill_switch" and not halted.approved
        assert "kill switch OFF" in mesh.cli("kill-switch", "off").stdout
        state = client.request(RiskStatus())
        assert isinstance(state, RiskStatusReply) and state.trading_state == "ACTIVE"
        recorded = mesh.query("SELECT rule, approved FROM risk_events WHERE request_id IN ('t-1', 't-2')")
        assert sorted(recorded) == [("kill_switch", 0), ("max_order_size", 0)]
    finally:
        client.close()
        ctx.destroy(linger=0)  # a failed assertion leaves sockets open: term() would wait on them


def test_malformed_frames_are_counted_and_survived(mesh):
    ctx = zmq.Context()
    try:
        # REP sockets: garbage in, a clear error out, and the next good request still answered.
        for endpoint, schema, good in (("risk.rep", RiskReplies, RiskStatus()),
                                       ("feed.rep", FeedReplies, RecentCandles(symbol="BTCUSDT", n=3)),
                                       ("forks.rep", ForkReplies, ListForks())):
            sock = ctx.socket(zmq.REQ)
            sock.connect(mesh.settings.endpoint(endpoint))
            sock.send(b"\xc1 not msgpack")
            assert sock.poll(5000)
            reply = ReqClient(ctx, "inproc://unused", schema, 1, 1, Logger("t", "ERROR")).decoder.decode(sock.recv())
            assert isinstance(reply, ErrorReply) and "malformed" in reply.error
            sock.send_multipart([b"two", b"frames"])
            assert sock.poll(5000)
            sock.recv()
            sock.send(encode(good))
            assert sock.poll(5000)
            answer = ReqClient(ctx, "inproc://unused", schema, 1, 1, Logger("t", "ERROR")).decoder.decode(sock.recv())
            assert answer.ok, answer
            sock.close(0)
        for service in ("risk", "feed", "forks"):
            assert mesh.metric(service, "mesh_decode_errors_total", kind="req") >= 2

        # Subscribers: impersonate the feed (every market-data subscriber) and the executor (the risk guard).
        listeners = {"feed": ["strategy_momentum", "strategy_macd", "executor", "forks", "narrator"],
                     "executor": ["risk", "narrator"]}
        assert "stopped" in mesh.ctl("stop", "feed")  # no fills while the executor is impersonated
        for publisher, subscribers in listeners.items():
            pids = {s: mesh.pid(s) for s in subscribers}
            if publisher != "feed":
                assert "stopped" in mesh.ctl("stop", publisher)
            pub = ctx.socket(zmq.PUB)
            pub.bind(mesh.settings.endpoint(f"{publisher}.pub"))
            bad_tick = encode(Tick(symbol="BTCUSDT", price=1.0))[:-3]

            def garbage_counted(pub=pub, bad_tick=bad_tick, subscribers=subscribers) -> bool:  # until all counted some
                pub.send_multipart([b"md.tick.BTCUSDT", b"\x00garbage"])
                pub.send_multipart([b"md.candle.1m.BTCUSDT", bad_tick])
                pub.send_multipart([b"acct", b"\x93\x01\x02\x03"])
                pub.send_multipart([b"fill", encode(Tick(symbol="X", price=2.0))])
                pub.send_multipart([b"md.tick.BTCUSDT"])
                return all(mesh.metric(s, "mesh_decode_errors_total") > 0 for s in subscribers)

            wait_for(garbage_counted, 30, f"{publisher}'s subscribers to count the garbage", interval=0.3)
            pub.close(0)
            connections = mesh.collector.connections
            if publisher != "feed":
                assert "started" in mesh.ctl("start", publisher)
                wait_for(lambda n=connections: mesh.collector.connections > n, 30,
                         "the fill collector connected to the restarted executor before trading resumes")
            for subscriber in subscribers:
                assert mesh.pid(subscriber) == pids[subscriber], f"{subscriber} restarted"
        assert "started" in mesh.ctl("start", "feed")
        wait_for(mesh.all_running, 30, "everything running")
        trades = mesh.trade_count()
        wait_for(lambda: mesh.trade_count() > trades, 60, "trading after the garbage")
    finally:
        ctx.destroy(linger=0)


def test_feed_answers_recent_candles(mesh):
    ctx = zmq.Context()
    client = ReqClient(ctx, mesh.settings.endpoint("feed.rep"), FeedReplies, 2000, 3, Logger("t", "ERROR"))
    try:
        reply = client.request(RecentCandles(symbol="ETHUSDT", n=5))
        assert isinstance(reply, CandlesReply) and len(reply.candles) == 5
        times = [c.open_time for c in reply.candles]
        assert times == sorted(times) and times[-1] - times[0] == 4 * 60_000
        unknown = client.request(RecentCandles(symbol="DOGEUSDT", n=5))
        assert isinstance(unknown, ErrorReply) and "unknown symbol" in unknown.error
    finally:
        client.close()
        ctx.destroy(linger=0)


def test_dashboard_serves_state_metrics_and_live_events(mesh):
    import httpx
    from websockets.sync.client import connect

    base = mesh.settings.dashboard_url.rstrip("/")
    assert httpx.get(f"{base}/healthz").json() == {"ok": True, "redis": True}
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and "Meshtrader" in page.text and "http" not in page.text.split("<script>")[0]
    docs = httpx.get(f"{base}/docs")  # the API docs work offline: every asset is the dashboard's own
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text and "https://" not in docs.text
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', docs.text):
        assert httpx.get(f"{base}{asset}").status_code == 200, asset
    assert {"/api/state", "/api/kill-switch"} <= set(httpx.get(f"{base}/openapi.json").json()["paths"])
    for script in re.findall(r'<script src="(/[^"]+)"', page.text):  # the chart library is the dashboard's own
        assert httpx.get(f"{base}{script}").status_code == 200, script
    symbol = mesh.settings.symbols[0]
    bars = wait_for(lambda: httpx.get(f"{base}/api/candles", params={"symbol": symbol}).json()["candles"], 30,
                    "candles on the chart")
    assert [c["time"] for c in bars] == sorted({c["time"] for c in bars})
    first = bars[0]["time"] * 1000
    shown = wait_for(lambda: httpx.get(f"{base}/api/trades", params={"symbol": symbol, "since_et": first}).json()["trades"],
                     60, "a trade on the chart")
    stored = mesh.query("SELECT price FROM trades WHERE symbol=? AND event_time>=? ORDER BY event_time, created_at",
                        (symbol, first))
    assert stored[:len(shown)] == [(t["price"],) for t in shown]  # the store's exact strings
    for path in ("candles", "trades"):
        unknown = httpx.get(f"{base}/api/{path}", params={"symbol": "DOGEUSDT"})
        assert unknown.status_code == 404 and "DOGEUSDT is not traded here" in unknown.json()["detail"]
    curves = wait_for(lambda: (e := httpx.get(f"{base}/api/equity").json())["portfolio"] and e, 60, "an equity point")
    recorded = mesh.query("SELECT event_time, strategy, equity FROM strategy_performance WHERE event_time<=? "
                          "ORDER BY event_time, strategy", (curves["portfolio"][-1]["time"],))
    assert {(p["time"], name, p["equity"]) for name, points in curves["strategies"].items() for p in points} \
        == set(recorded)
    for point in curves["portfolio"]:  # the portfolio's equity is its strategies' to the last digit
        assert Decimal(point["equity"]) == sum(Decimal(e) for t, _, e in recorded if t == point["time"])
    assert httpx.get(f"{base}/api/candles", params={"symbol": symbol, "n": 0}).status_code == 422
    state = wait_for(lambda: (s := httpx.get(f"{base}/api/state").json())["risk_limits"] and s, 30, "limits in use")
    assert {"daily loss", "portfolio drawdown", "exposure", "entries today"} <= {r["limit"] for r in state["risk_limits"]}
    wait_for(lambda: httpx.get(f"{base}/api/state").json()["risk_rev"] > state["risk_rev"] > 0, 30,
             "a newer risk state (the page draws no state older than one it has drawn)")
    assert all(v["up_s"] is not None and v["up_s"] >= 0 for n, v in state["services"].items() if n != "redis")
    counters = httpx.get(f"{base}/api/services").json()
    assert counters["executor"]["messages_out"] > 0 and counters["feed"]["messages_out"] > 0
    assert set(counters["risk"]) == {"messages_in", "messages_out", "decode_errors", "sequence_gaps", "starts",
                                     "restarts", "last_start", "last_error"}
    assert counters["risk"]["starts"] >= 1
    assert state["mode"] == "paper" and "last_trades" in state and state["services"]["executor"]["healthy"]
    assert {"forks", "regime_table"} <= set(state)
    token, _ = dashboard_token(mesh.settings)
    control = {"Authorization": f"Bearer {token}"}
    for headers, refused in (({}, 401), ({"Authorization": "Bearer guessed"}, 403)):  # controls need the token
        for path, body in (("validate", {"optimize": False}), ("kill-switch", {"on": True}),
                           ("close-all", {"confirm": True}), ("pause", {"on": True}),
                           ("risk/limits", {"name": "daily_loss_pct", "value": "0.5"})):
            answer = httpx.post(f"{base}/api/{path}", json=body, headers=headers)
            assert answer.status_code == refused and "token" in answer.json()["detail"]
    logs = "".join(p.read_text(errors="replace") for p in mesh.settings.log_dir.glob("*.log"))
    assert mesh.status()["trading_state"] == "ACTIVE" and token not in logs
    # bad requests: a 4xx that says what was wrong
    for path, params, status, said in (("logs", {"service": "nosuch"}, 404, "no service 'nosuch'; one of"),
                                       ("logs", {"service": "risk", "level": "LOUD"}, 422, "level"),
                                       ("overlays", {"symbol": symbol, "strategy": "nosuch"}, 404, "not running here"),
                                       ("forks", {"n": 0}, 422, "greater than or equal to 1")):
        answer = httpx.get(f"{base}/api/{path}", params=params)
        assert answer.status_code == status and said in json.dumps(answer.json()["detail"]), (path, answer.text)
    refused = httpx.post(f"{base}/api/risk/limits", json={"name": "daily_loss_pct", "value": "5%"}, headers=control)
    assert refused.status_code == 400 and "not a number" in refused.json()["detail"]
    assert httpx.post(f"{base}/api/risk/limits", json={"value": "1"}, headers=control).status_code == 422
    # every view's data, with money as exact strings
    insights = httpx.get(f"{base}/api/strategies").json()["strategies"]
    assert set(insights) == set(mesh.settings.strategies)
    for name, figures in insights.items():
        assert Decimal(figures["realized_pnl"]).is_finite() and Decimal(figures["fees"]) >= 0
        assert figures["trades"] <= mesh.query("SELECT COUNT(*) FROM trades WHERE strategy=?", (name,))[0][0]
    assert set(httpx.get(f"{base}/api/regimes").json()["symbols"]) == set(mesh.settings.symbols)
    for position in httpx.get(f"{base}/api/positions").json()["positions"]:  # exact strings, marked at the last price
        assert Decimal(position["unrealized_pnl"]).is_finite() and Decimal(position["qty"]) != 0
    risk = httpx.get(f"{base}/api/risk").json()
    assert risk["trading_state"] == "ACTIVE" and "daily_loss_pct" in risk["limit_values"]
    assert {"daily loss", "exposure"} <= {r["limit"] for r in risk["limits_in_use"]}
    assert set(httpx.get(f"{base}/api/features").json()["strategies"]) == set(mesh.settings.strategies)
    lines = httpx.get(f"{base}/api/logs", params={"service": "executor", "limit": 5}).json()["lines"]
    assert 0 < len(lines) <= 5 and all(line["service"] == "executor" for line in lines if line["level"] != "RAW")
    asked = httpx.post(f"{base}/api/validate", json={"optimize": False}, headers=control)
    assert asked.status_code == 200 and "validation queued" in asked.json()["message"]
    assert "mesh_up" in httpx.get(f"{base}/metrics").text
    for program in ("feed", "executor", "risk", "strategy_macd"):
        assert "mesh_messages_out_total" in mesh.metrics(program)
    # the live stream: a snapshot stamped with a number, then numbered events with no gap; a page that
    # reconnects with the last number it saw gets exactly what it missed
    with connect(base.replace("http", "ws") + "/ws", open_timeout=10) as socket:
        snapshot = json.loads(socket.recv(timeout=30))
        assert snapshot["type"] == "snapshot" and snapshot["state"]["mode"] == "paper"
        epoch, seen, topics = snapshot["epoch"], [snapshot["seq"]], set()
        deadline = time.monotonic() + 60
        while not {"fill", "md"} <= topics and time.monotonic() < deadline:
            message = json.loads(socket.recv(timeout=60))
            topics.add(message["topic"].split(".")[0] if message["topic"].startswith("md.") else message["topic"])
            seen.append(message["seq"])
        assert {"fill", "md"} <= topics and seen == list(range(seen[0], seen[-1] + 1))
    after = seen[-1]
    with connect(base.replace("http", "ws") + f"/ws?epoch={epoch}&after={after}", open_timeout=10) as socket:
        resumed = json.loads(socket.recv(timeout=30))
        assert resumed == {"type": "resume", "epoch": epoch, "seq": after}
        assert json.loads(socket.recv(timeout=30))["seq"] == after + 1
    with connect(base.replace("http", "ws") + "/ws?epoch=elsewhere&after=5", open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=30))["type"] == "snapshot"  # another dashboard's numbers: start afresh
    bad = httpx.post(f"{base}/api/kill-switch", json={"on": "maybe"}, headers=control)
    assert bad.status_code == 422
    assert httpx.post(f"{base}/api/kill-switch", json={"on": True}, headers=control).json()["ok"]
    assert wait_for(lambda: mesh.status()["trading_state"] == "HALTED", 10, "halt via the API")
    assert httpx.post(f"{base}/api/kill-switch", json={"on": False}, headers=control).json()["ok"]
    assert wait_for(lambda: mesh.status()["trading_state"] == "ACTIVE", 10, "trading again")
    narrated = mesh.query("SELECT kind FROM pr_events")
    assert ("first_trade",) in narrated and ("risk_halt",) in narrated
    regimes = wait_for(lambda: mesh.query("SELECT regime, metrics FROM market_regimes"), 60, "a market regime")
    assert regimes[0][0] in REGIMES
    assert set(json.loads(regimes[0][1])) >= {"adx", "slope", "volatility", "correlation", "volume_ratio"}
    assert mesh.status()["regime"] is not None
    assert "First trade" in (mesh.home / "narrative.md").read_text()


def test_forks_are_consistent_copies_that_expire_and_orphans_go(mesh):
    import sqlite3

    from meshtrader.wire.messages import CreateFork, ForkReply

    ctx = zmq.Context()
    client = ReqClient(ctx, mesh.settings.endpoint("forks.rep"), ForkReplies, 5000, 2, Logger("t", "ERROR"))
    try:
        wait_for(lambda: mesh.trade_count() > 0, 60, "a trade to copy")
        # TTLs run on market time: at 40 candles a second, ten market days last minutes, two market minutes an instant.
        kept = client.request(CreateFork(purpose="validation", requester="test", ttl_s=864_000, writable=True))
        brief = client.request(CreateFork(purpose="whatif", requester="test", ttl_s=120, writable=True))
        assert isinstance(kept, ForkReply) and kept.ok and isinstance(brief, ForkReply) and brief.ok, (kept, brief)
        first, second = (client.request(CreateFork(purpose="backtest", requester=who, ttl_s=600)) for who in "ab")
        assert first.ok and first.fork_id == second.fork_id  # read-only requests share a young read-only fork
        assert mesh.query("SELECT shared FROM fork_tracking WHERE fork_id=?", (first.fork_id,)) == [(1,)]
        row = mesh.query("SELECT purpose, requester, status, ttl_s FROM fork_tracking WHERE fork_id=?", (kept.fork_id,))
        assert row == [("validation", "test", "active", 864_000)]
        fork = sqlite3.connect(f"file:{kept.path}?mode=ro", uri=True)
        assert fork.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert fork.execute("SELECT COUNT(*) FROM trades").fetchone()[0] > 0
        fork.close()
        backtest = mesh.cli("backtest", "--strategy", "macd", "--fork", kept.fork_id, "--json")
        assert json.loads(backtest.stdout)["bars"] > 0
        listed = {f["id"]: f for f in json.loads(mesh.cli("forks", "--json").stdout)}
        assert listed[kept.fork_id]["purpose"] == "validation" and listed[kept.fork_id]["backend"] == "sqlite"
        assert set(listed[kept.fork_id]) >= {"id", "backend", "purpose", "requester", "status", "created", "ttl_s",
                                             "results"}
        assert listed[kept.fork_id]["results"]["method"] in ("reflink", "copy_file_range", "copy")
        wait_for(lambda: mesh.query("SELECT status FROM fork_tracking WHERE fork_id=?", (brief.fork_id,))
                 == [("destroyed",)], 30, "the brief fork to expire")
        assert not os.path.exists(brief.path) and os.path.exists(kept.path)
        destroyed = {f["id"]: f for f in json.loads(mesh.cli("forks", "--json").stdout)}
        assert destroyed[brief.fork_id]["status"] == "destroyed"
        stray = mesh.settings.forks_dir / "fork-stray.db"
        stray.write_bytes(b"left behind by a crash")
        old_pid = mesh.pid("forks")
        os.kill(old_pid, signal.SIGKILL)
        wait_for(lambda: mesh.pid("forks") not in (0, old_pid) and mesh.running("forks"), 30, "forks back")
        wait_for(lambda: not stray.exists(), 10, "the orphan to be removed")
        assert ("fork_created",) in mesh.query("SELECT kind FROM pr_events")
    finally:
        client.close()
        ctx.destroy(linger=0)


def test_validation_on_forks_moves_allocations_and_books_still_reconcile(mesh):
    validated = wait_for(lambda: mesh.query("SELECT weights, reason FROM allocations WHERE reason LIKE 'validation%'"),
                         90, "an allocation from a validation")
    weights = json.loads(validated[-1][0])
    # no strategy earns its fees on 1-minute bars: the cash line (MESH_ALLOC_CASH_MAX_PCT) holds their share
    assert set(weights) - {"cash"} == {"momentum", "macd"} and sum(Decimal(w) for w in weights.values()) == 1
    assert weights != {"momentum": "0.5000", "macd": "0.5000"} and "Sharpe" in validated[-1][1]
    forks = json.loads(mesh.cli("forks", "--json").stdout)
    assert any(f["purpose"] == "validation" and f["requester"] == "allocator" and f["results"]
               and "validation" in f["results"] for f in forks)
    wait_for(lambda: mesh.query("SELECT COUNT(*) FROM ledger WHERE reason LIKE 'rebalance%'")[0][0] > 0, 30,
             "the executor to rebalance")
    transfers = mesh.query("SELECT amount FROM ledger WHERE reason LIKE 'rebalance%'")
    assert sum(Decimal(a) for (a,) in transfers) == 0
    # The allocator gives each fork back once it has read it: destroyed then, not at the end of its TTL.
    released = wait_for(lambda: [f for f in forks_listed(mesh) if f["requester"] == "allocator"
                                 and f["status"] == "destroyed" and "allocator" in (f["results"] or {}).get("released_by", [])],
                        60, "a fork the allocator released")
    assert {f["purpose"] for f in released} >= {"validation"}
    assert not mesh.query("SELECT reason FROM allocations WHERE reason LIKE '%what-if skipped%'")
    reconcile_after_more_trades(mesh, mesh.trade_count())


def forks_listed(mesh) -> list[dict]:
    return json.loads(mesh.cli("forks", "--json").stdout)


def test_optimisation_and_what_if_run_on_forks(mesh):
    wait_for(lambda: mesh.trade_count() > 0, 60, "market data to optimise on")
    asked = mesh.cli("validate", "--optimize", "--reason", "test")
    assert asked.returncode == 0 and "validation queued" in asked.stdout
    # Validations of the mesh's own (schedule, regime changes, losses) run meanwhile, with optimisations of
    # their own: wait for the validation this request made (its trigger) and the optimisation it asked for
    # (which names that validation's fork), not for whichever comes first.
    [validation] = wait_for(lambda: [f for f in forks_listed(mesh) if f["purpose"] == "validation" and "test" in
                                     ((f["results"] or {}).get("triggers") or [])], 120, "the validation asked for")
    assert "validation" in validation["results"] and validation["requester"] == "allocator"
    optimized = wait_for(lambda: [f for f in forks_listed(mesh) if f["purpose"] == "optimization" and "optimization"
                                  in (f["results"] or {}) and validation["id"] in f["results"].get("validation_forks", [])],
                         120, "the parameter optimisation the validation asked for")
    result = optimized[0]["results"]["optimization"]
    assert result["workers"] == 2 and result["trials"] > 0 and "walk-forward" in result["reason"]
    assert result["bars_in_sample"] > result["bars_out_of_sample"] > 0
    what_if = wait_for(lambda: [f for f in forks_listed(mesh) if f["purpose"] == "whatif"
                                and "whatif" in (f["results"] or {})], 120, "a what-if")
    outcome = what_if[0]["results"]["whatif"]
    assert set(outcome["outcome"]) == {"proposed", "current", "equal"} and outcome["chosen"] in outcome["outcome"]


def test_new_parameters_are_swapped_in_without_a_restart(mesh):
    from meshtrader.wire.messages import ParamsUpdate

    log = mesh.settings.log_dir / "strategy_momentum.log"
    pid = mesh.pid("strategy_momentum")
    assert "stopped" in mesh.ctl("stop", "allocator")  # the test speaks for the allocator
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)  # sees the worker's subscription arrive: only then is a message not lost
    try:
        pub.bind(mesh.settings.endpoint("allocator.pub"))
        wait_for(lambda: pub.poll(100) and pub.recv() == b"\x01params.momentum", 30,
                 "the worker subscribed to parameters again")
        for params in ({"fast": 40, "slow": 10}, {"fast": 4, "slow": 27}):
            update = ParamsUpdate(strategy="momentum", params=params, reason="test", et=1)
            pub.send_multipart([b"params.momentum", encode(update)])
        wait_for(lambda: '"params": {"fast": 4, "slow": 27}' in log.read_text(), 20, "the new parameters in use")
        assert '"event": "params_rejected"' in log.read_text()  # fast >= slow: refused, the old set kept
    finally:
        pub.close(0)
        ctx.destroy(linger=0)
        assert "started" in mesh.ctl("start", "allocator")
    assert mesh.pid("strategy_momentum") == pid
    trades = mesh.trade_count()
    wait_for(lambda: mesh.trade_count() > trades, 60, "trading on")


def test_a_risk_breach_freezes_an_incident_fork_and_close_all_works_while_halted(mesh):
    import httpx

    for _ in range(10):  # halted with a position open: nothing but a close-all can sell it now
        wait_for(lambda: mesh.status()["positions"], 60, "an open position")
        assert "kill switch ON" in mesh.cli("kill-switch", "on").stdout
        held = wait_settled(lambda: [(p["strategy"], p["symbol"], p["qty"]) for p in mesh.status()["positions"]], 30,
                            "the account snapshot to catch up", interval=0.5)
        if held:
            break
        assert "kill switch OFF" in mesh.cli("kill-switch", "off").stdout
    try:
        incidents = wait_for(lambda: [f for f in forks_listed(mesh) if f["purpose"] == "incident"
                                      and "incident" in (f["results"] or {})], 30, "an incident fork")
        assert incidents[0]["requester"] == "risk" and incidents[0]["ttl_s"] == 604800
        # one flip halts trading and turns the kill switch on: one incident, one fork with both reasons
        assert any("kill switch" in f["results"]["incident"] and "halted" in f["results"]["incident"] for f in incidents)
        base = mesh.settings.dashboard_url.rstrip("/")
        control = {"Authorization": f"Bearer {dashboard_token(mesh.settings)[0]}"}
        assert httpx.post(f"{base}/api/close-all", json={}, headers=control).status_code == 400  # needs the confirmation
        refused = mesh.cli("close-all", check=False)  # no terminal to ask on: refuses without --yes
        assert refused.returncode == 2 and "--yes" in refused.stderr
        closed = mesh.cli("close-all", "--yes", "--reason", "test")
        assert closed.returncode == 0 and "positions closed" in closed.stdout, closed.stdout + closed.stderr
        assert wait_for(lambda: not mesh.status()["positions"], 10, "every position closed")
        wait_for(lambda: mesh.query("SELECT COUNT(*) FROM risk_events WHERE rule='close_all' AND approved=1")[0][0],
                 10, "the close-all approvals on record")
        assert mesh.status()["trading_state"] == "HALTED"
    finally:
        assert "kill switch OFF" in mesh.cli("kill-switch", "off").stdout


class LoneForkManager:
    """The fork manager alone (SQLite forks, no Redis): the test speaks for the rest of the mesh."""

    def __init__(self, home, **env: str) -> None:
        import subprocess
        import sys

        from meshtrader.runtime.config import REPO_ROOT, load_settings
        from tools.localmesh import free_port_base

        base = free_port_base()
        environ = {**{k: v for k, v in os.environ.items() if not k.startswith("MESH_")}, "MESH_HOME": str(home),
                   "MESH_PORT_BASE": str(base), "MESH_REDIS_URL": "redis://127.0.0.1:1", **env}
        self.settings = load_settings(home=home, port_base=base)
        self.settings.prepare_home()  # the socket directory, for the sockets a test binds in the manager's place
        self.process = subprocess.Popen([sys.executable, "-m", "meshtrader.services.forks"], cwd=REPO_ROOT,
                                        env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ctx = zmq.Context()
        self.client = ReqClient(self.ctx, self.settings.endpoint("forks.rep"), ForkReplies, 5000, 2,
                                Logger("t", "ERROR"))

    def __enter__(self) -> LoneForkManager:
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)
        self.ctx.term()

    def forks(self, purpose: str) -> list[dict]:
        from meshtrader.persistence.fork_registry import ForkRegistry
        from meshtrader.persistence.store import Store

        store = Store(self.settings.db_path, read_only=True)
        try:
            return [f for f in ForkRegistry(store).listing() if f["purpose"] == purpose]
        finally:
            store.close()


def test_one_risk_breach_freezes_one_incident_fork(tmp_path):
    """A kill switch turned on halts trading too: one breach, one incident fork, both reasons on it."""
    from meshtrader.wire.messages import RiskState

    with LoneForkManager(tmp_path) as manager:
        risk = manager.ctx.socket(zmq.XPUB)  # stands in for the risk guard; XPUB says when the manager subscribed
        try:
            risk.bind(manager.settings.endpoint("risk.pub"))
            wait_for(lambda: risk.poll(100) and risk.recv() == b"\x01risk.state", 30, "the fork manager to subscribe")

            def state(trading_state: str, kill_switch: bool = False, deactivated: tuple = (), reason: str = "") -> None:
                risk.send_multipart([b"risk.state", encode(RiskState(
                    trading_state=trading_state, kill_switch=kill_switch, deactivated=list(deactivated),
                    reason=reason, et=1))])

            state("ACTIVE")
            state("HALTED", kill_switch=True, reason="kill switch turned on by test")  # the flip
            state("HALTED", kill_switch=True)  # republished every second: no new breach
            state("ACTIVE")
            state("HALTED", kill_switch=True)  # flapping within a minute: no second snapshot
            state("ACTIVE", deactivated=("macd",), reason="drawdown")  # another breach, and the last message
            wait_for(lambda: [f for f in manager.forks("incident") if "macd" in (f["results"] or "")], 30,
                     "the deactivation's incident fork")  # so every state before it has been handled
            incidents = [json.loads(f["results"]).get("incident", "") for f in manager.forks("incident")]
            assert len(incidents) == 2, incidents
            flip, deactivation = sorted(incidents, key=lambda why: "macd" in why)
            assert "kill switch" in flip and "halted" in flip and deactivation == "macd deactivated: drawdown"
        finally:
            risk.close(0)


def test_released_forks_go_and_free_their_place_under_the_fork_limit(tmp_path):
    from meshtrader.persistence.fork_registry import ForkRegistry
    from meshtrader.persistence.store import Store
    from meshtrader.wire.messages import CreateFork, ForkReply

    with LoneForkManager(tmp_path, MESH_MAX_FORKS="2") as manager:
        def fork(purpose: str, requester: str):
            return manager.client.request(CreateFork(purpose=purpose, requester=requester, ttl_s=864_000))

        first, second = fork("validation", "a"), fork("whatif", "b")
        assert isinstance(first, ForkReply) and first.ok and second.ok, (first, second)
        refused = fork("optimization", "c")
        assert not refused.ok and "limit reached: 2 live forks (max 2): 1 validation, 1 whatif" in refused.reason
        assert fork("validation", "d").fork_id == first.fork_id  # shared: two holders now
        store = Store(manager.settings.db_path)
        try:
            registry = ForkRegistry(store)
            assert not registry.release(first.fork_id, "a")  # d still reads it
            assert registry.release(second.fork_id, "b")
            wait_for(lambda: registry.get(second.fork_id)["status"] == "destroyed", 30, "the released fork to go")
            assert not os.path.exists(second.path) and os.path.exists(first.path)
            third = fork("optimization", "c")  # its place is free again
            assert third.ok, third
            assert registry.release(first.fork_id, "d")
            wait_for(lambda: registry.get(first.fork_id)["status"] == "destroyed", 30,
                     "the shared fork to go once both holders released it")
            assert not os.path.exists(first.path)
            assert json.loads(registry.get(first.fork_id)["results"])["released_by"] == ["a", "d"]
            assert not registry.release(first.fork_id, "d")  # gone: nothing to release
            assert registry.get(third.fork_id)["status"] == "active"  # nobody released it
        finally:
            store.close()


def test_alerts_reach_telegram_and_the_webhook_and_the_token_stays_secret(mesh, alert_sink):
    from conftest import TELEGRAM_TOKEN

    assert "kill switch ON" in mesh.cli("kill-switch", "on").stdout
    try:
        wait_for(lambda: {p for p, _ in alert_sink.received if "halted" in str(_).lower()} >= {
            "/hook", f"/bot{TELEGRAM_TOKEN}/sendMessage"}, 20, "the halt alert on both channels")
    finally:
        assert "kill switch OFF" in mesh.cli("kill-switch", "off").stdout
    hook = next(body for path, body in alert_sink.received if path == "/hook" and "halted" in body["title"].lower())
    assert hook["level"] == "critical" and hook["service"] == "narrator" and "kill switch" in hook["body"]
    telegram = next(body for path, body in alert_sink.received if path.startswith("/bot") and "halted" in str(body))
    assert telegram["chat_id"] == 42 and telegram["text"].startswith("<b>[CRITICAL] Trading halted</b>")  # Apprise's
    logs = "".join(p.read_text(errors="replace") for p in mesh.settings.log_dir.glob("*.log"))
    assert logs and TELEGRAM_TOKEN not in logs and "planted-telegram-token" not in logs
