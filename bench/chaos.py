"""Chaos: kill -9 the mesh's processes under fast replay and time each recovery; the books must reconcile.

Each service in turn (the executor while it fills, the feed, the allocator during a validation, the fork
manager while it clones, the risk guard, every strategy worker, the narrator, the dashboard), then two
at once, then Redis. A recovery is the time from the kill to supervisord having restarted every killed
program and every service being healthy again (fresh heartbeat, RUNNING). At the end the feed is
stopped and the books are checked: no order left in a non-final state, no trade stored twice, and the
ledger and trades rebuild to the executor's published account. tests/mesh/test_chaos.py runs a bounded
form of it and shares `kill_9`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from meshtrader.domain.orders import TERMINAL
from meshtrader.domain.portfolio import Portfolio
from meshtrader.ops.status import service_health
from meshtrader.persistence.hotstate import HotState
from meshtrader.persistence.store import Store
from tools.localmesh import LocalMesh

CHAOS_ENV = {"MESH_REPLAY_SPEED": "40", "MESH_ALERT_RATE_PER_MIN": "100", "MESH_VALIDATION_WINDOWS_MIN": "720,1440",
             "MESH_VALIDATION_WINDOW_WEIGHTS": "0.6,0.4"}
RECOVERY_TIMEOUT_S = 60.0


def until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def healthy(mesh: LocalMesh) -> bool:
    """Every service RUNNING with a fresh heartbeat, and Redis answering, as `mesh status` tells it (read
    in-process: a `mesh status` subprocess per poll would add its start-up to every recovery measured)."""
    hot = HotState(mesh.settings.effective_redis_url, mesh.settings.redis_prefix)
    try:
        return all(service["healthy"] for service in service_health(mesh.settings, hot).values())
    finally:
        hot.close()


def kill_9(mesh: LocalMesh, programs: list[str], when: Callable[[], object] | None = None) -> float:
    """kill -9 these programs at once (once `when` holds); seconds until each was restarted and the mesh is
    healthy again."""
    if when is not None:
        until(when, RECOVERY_TIMEOUT_S, f"the moment to kill {', '.join(programs)}", interval=0.02)
    old = {program: mesh.pid(program) for program in programs}
    started = time.monotonic()
    for pid in old.values():
        os.kill(pid, signal.SIGKILL)
    until(lambda: all(mesh.pid(p) not in (0, old[p]) for p in programs) and mesh.all_running() and healthy(mesh),
          RECOVERY_TIMEOUT_S, f"{', '.join(programs)} restarted and the mesh healthy")
    return round(time.monotonic() - started, 3)


def query(mesh: LocalMesh, sql: str, params: tuple = ()) -> list[tuple]:
    store = Store(mesh.settings.store_location, read_only=True)
    try:
        return [tuple(row) for row in store.query(sql, params)]
    finally:
        store.close()


def trades(mesh: LocalMesh) -> int:
    return query(mesh, "SELECT COUNT(*) FROM trades")[0][0]


def filling(mesh: LocalMesh) -> Callable[[], bool]:
    """True the moment the executor has just stored a new trade: it is in the middle of filling."""
    seen = trades(mesh)
    return lambda: trades(mesh) > seen


def cloning(mesh: LocalMesh, purpose: str) -> Callable[[], bool]:
    """True once a fork of this purpose is being made or in use (asked for after this call)."""
    since = time.time()
    return lambda: bool(query(mesh, "SELECT 1 FROM fork_tracking WHERE purpose=? AND created_at>=? LIMIT 1",
                              (purpose, since)))


def validate_in_background(mesh: LocalMesh) -> subprocess.Popen:
    """`mesh validate`, not waited for: the allocator is validating while the caller kills something."""
    return subprocess.Popen([sys.executable, "-m", "meshtrader", "validate", "--reason", "chaos"], env=mesh.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def books_problems(mesh: LocalMesh) -> list[str]:
    """With the feed stopped and the mesh settled: what does not reconcile (empty when all does). Books are
    the store's ledger and trades rebuilt, against the executor's published account."""
    problems = []
    stuck = query(mesh, f"SELECT order_id, status FROM orders WHERE status NOT IN ({','.join('?' * len(TERMINAL))})",
                  tuple(TERMINAL))
    if stuck:
        problems.append(f"orders left in a non-final state: {stuck}")
    if query(mesh, "SELECT trade_id FROM trades GROUP BY trade_id HAVING COUNT(*) > 1"):
        problems.append("a trade stored twice")
    if query(mesh, "SELECT signal_id FROM orders GROUP BY signal_id HAVING COUNT(*) > 1"):
        problems.append("a signal produced more than one order")
    store = Store(mesh.settings.store_location, read_only=True)
    try:
        rebuilt = Portfolio.rebuild(store.ledger(), store.trades())
    finally:
        store.close()
    for published in mesh.status()["accounts"]:
        books = rebuilt.accounts[published["strategy"]]
        if Decimal(published["cash"]) != books.cash:
            problems.append(f"{published['strategy']}: cash {published['cash']} published, {books.cash} in the books")
        marked = sum((Decimal(p["qty"]) * Decimal(p["last_price"]) for p in published["positions"]), Decimal(0))
        if Decimal(published["cash"]) + marked != Decimal(published["equity"]):
            problems.append(f"{published['strategy']}: cash + positions != equity")
        held = {p["symbol"]: Decimal(p["qty"]) for p in published["positions"]}
        if held != {s: p.qty for s, p in books.positions.items() if p.qty}:
            problems.append(f"{published['strategy']}: positions differ from the books")
    return problems


def settle(mesh: LocalMesh) -> None:
    """Stop the feed and wait until trades and the published accounts stop changing."""
    mesh.ctl("stop", "feed")
    seen: list = []

    def settled() -> bool:
        seen.append((trades(mesh), mesh.status().get("accounts")))
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    until(settled, RECOVERY_TIMEOUT_S, "the mesh to settle with the feed stopped", interval=0.6)


def run_chaos_suite(progress: bool = True) -> dict:
    recoveries: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="meshchaos-") as tmp:
        mesh = LocalMesh(Path(tmp), CHAOS_ENV)
        mesh.start()
        try:
            until(lambda: trades(mesh) >= 3, 120, "the first trades")
            strategies = [p for p in mesh.settings.service_names() if p.startswith("strategy_")]

            def step(label: str, programs: list[str], when: Callable[[], object] | None = None) -> None:
                recoveries[label] = kill_9(mesh, programs, when)
                if progress:
                    print(f"{label}: recovered in {recoveries[label]:.2f} s", file=sys.stderr)

            step("executor (filling)", ["executor"], filling(mesh))
            step("feed", ["feed"])
            for label, program in (("allocator (validating)", "allocator"), ("forks (cloning)", "forks")):
                forked = cloning(mesh, "validation")
                validation = validate_in_background(mesh)
                step(label, [program], forked)
                validation.wait(120)
            for program in ("risk", *strategies, "narrator", "dashboard"):
                step(program, [program])
            step(f"{strategies[0]} + risk", [strategies[0], "risk"])
            step("executor + feed", ["executor", "feed"])
            step("redis", ["redis"])
            before = trades(mesh)
            until(lambda: trades(mesh) > before, 120, "trading again after the chaos")
            settle(mesh)
            problems = books_problems(mesh)
            told = {title for (title,) in query(mesh, "SELECT title FROM pr_events WHERE kind='service_died'")}
            total = trades(mesh)
        finally:
            mesh.stop()
    return {"recovery_s": recoveries, "max_recovery_s": max(recoveries.values()), "trades": total,
            "deaths_narrated": len(told), "reconciles": not problems, "problems": problems}
