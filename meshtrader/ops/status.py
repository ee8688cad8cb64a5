"""The mesh's state in one object, for `mesh status` and the dashboard's /api/state."""
from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from meshtrader.domain.risk import BOOK_KEY
from meshtrader.persistence import views
from meshtrader.persistence.fork_registry import ForkRegistry
from meshtrader.persistence.hotstate import CRASH_LOOP_KEY, HotState
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import Settings
from meshtrader.runtime.supervise import Supervisor

STALE_HEARTBEATS = 3  # a service is unhealthy after this many missed heartbeats


def service_health(settings: Settings, hot: HotState, include_supervisor: bool = True) -> dict[str, dict]:
    """Each service's state under supervisord, whether its heartbeat is fresh, its uptime, and its process
    (pid and start time: a new one means it restarted, however briefly), and whether it is in a crash loop
    (the watchdog's word, or supervisord gave up on it: FATAL)."""
    processes = Supervisor(settings).processes() if include_supervisor else {}
    beats = hot.get_many("hb:*")
    looping = {key[len(CRASH_LOOP_KEY):] for key in hot.get_many(CRASH_LOOP_KEY + "*")}
    now = time.time()
    services: dict[str, dict] = {}
    for name in settings.service_names():
        beat = beats.get(f"hb:{name}")
        age = round(now - beat["ts"], 3) if beat else None
        state = processes.get(name, {}).get("statename", "UNKNOWN" if include_supervisor else "n/a")
        healthy = age is not None and age < STALE_HEARTBEATS * settings.heartbeat_s + 1 and \
            (not include_supervisor or state == "RUNNING")
        process = processes.get(name, {})
        up = round(process["now"] - process["start"]) if state == "RUNNING" and process.get("start") else None
        services[name] = {"state": state, "healthy": healthy, "heartbeat_age_s": age, "up_s": up,
                          "pid": process.get("pid") or None, "started": process.get("start") or None,
                          "crash_loop": name in looping or state == "FATAL"}
    if "redis" in processes:
        services["redis"] = {"state": processes["redis"]["statename"], "healthy": hot.ping(),
                             "heartbeat_age_s": None, "pid": processes["redis"].get("pid") or None,
                             "started": processes["redis"].get("start") or None,
                             "crash_loop": "redis" in looping or processes["redis"]["statename"] == "FATAL"}
    return services


def mesh_state(settings: Settings, hot: HotState, include_supervisor: bool = True,
               last_trades: int = 0) -> dict[str, Any]:
    services = service_health(settings, hot, include_supervisor)
    account = hot.get("account") or {}
    alloc = hot.get("alloc") or {}
    risk = hot.get("risk") or {}
    positions = open_positions(account)
    stored = _from_store(settings, last_trades)
    funded: dict[str, Decimal] = stored.pop("funded")
    day_start: Decimal | None = stored.pop("day_start_equity")
    capital = sum(funded.values(), Decimal(0))
    deactivated = risk.get("deactivated", {})
    accounts = [{**a, "pnl": str(Decimal(a["equity"]) - funded[a["strategy"]]) if a["strategy"] in funded else None,
                 "active": a["strategy"] not in deactivated, "deactivated_because": deactivated.get(a["strategy"])}
                for a in account.get("accounts", [])]
    trading = [name for name in settings.service_names() if name != "dashboard"]  # the mesh, less its window
    running = [name for name in trading if services[name]["state"] == "RUNNING"]
    redis_up = hot.ping()
    state = {
        "mode": settings.mode,
        "market": settings.market,  # spot, or usdm: cash is then the wallet, equity wallet + unrealized PnL
        "symbols": settings.symbols,
        "mesh": {"up": bool(running) and redis_up, "running": len(running), "services": len(trading),
                 "redis": redis_up},
        "services": services,
        "equity": account.get("equity"),
        "cash": account.get("cash"),
        "exposure": account.get("exposure"),
        # since the sub-accounts were funded, to the last digit: equity less what they were funded with
        "pnl": str(Decimal(account["equity"]) - capital) if account and capital else None,
        # since the market day began (00:00 UTC market time), against the risk guard's day baseline
        "pnl_today": str(Decimal(account["equity"]) - day_start) if account and day_start is not None else None,
        "positions": positions,
        # each strategy's share, then the cash line's while it holds any (domain.allocation.CASH), in percent
        "allocations": {k: float(v) * 100 for k, v in alloc.get("weights", {}).items()},
        "allocation_cash_max_pct": float(settings.alloc_cash_max_pct) * 100,
        "trading_state": risk.get("trading_state", "UNKNOWN"),
        "risk_rev": risk.get("rev", 0),  # RiskState.rev: the page keeps the newest risk state it has seen
        "regime": (hot.get("regime") or {}).get("regime"),
        "kill_switch": risk.get("kill_switch"),
        "paused": bool(risk.get("paused_by")),
        "daily_halt": bool(risk.get("daily_halt")),  # mesh lift-daily-halt ends it before 00:00 UTC
        "limit_values": risk.get("limit_values", {}),
        "risk_reason": risk.get("reason", ""),
        "risk_limits": risk.get("limits", []),
        "event_time": account.get("event_time"),
        "accounts": accounts,
        **stored,
    }
    if last_trades:
        state["allocation_reason"] = alloc.get("reason")
    return state


def open_positions(account: dict[str, Any]) -> list[dict[str, Any]]:
    """Every strategy's open positions in the executor's account snapshot, with unrealized P&L at the last
    price (exact strings; a short's quantity is negative). Futures add each position's isolated margin and
    liquidation price."""
    futures = account.get("market") == "usdm"
    return [{"strategy": a["strategy"], "symbol": p["symbol"], "qty": p["qty"], "avg_price": p["avg_price"],
             "last_price": p["last_price"],
             "unrealized_pnl": str(Decimal(p["qty"]) * Decimal(p["last_price"]) - Decimal(p["cost"]))
             if "cost" in p else None,
             **({"margin": p.get("margin"), "liquidation_price": p.get("liquidation_price")} if futures else {})}
            for a in account.get("accounts", []) for p in a.get("positions", [])]


def risk_view(settings: Settings, hot: HotState, refusals: int) -> dict[str, Any]:
    """The risk guard's state as it last published it (trading state, why, the kill switch, the pause, each
    limit's use and value, deactivated strategies) and its latest refusals from the store."""
    risk = hot.get("risk") or {}
    with reading(settings) as store:
        rejections = views.recent_rejections(store, refusals) if store else []
    return {"trading_state": risk.get("trading_state", "UNKNOWN"), "reason": risk.get("reason", ""),
            "kill_switch": risk.get("kill_switch"), "paused_by": risk.get("paused_by"),
            "limits_in_use": risk.get("limits", []), "limit_values": risk.get("limit_values", {}),
            "deactivated": risk.get("deactivated", {}), "rejections": rejections}


@contextmanager
def reading(settings: Settings) -> Iterator[Store | None]:
    """The store, read-only, or None while there is none yet (a mesh that never started)."""
    if not settings.db_url and not settings.db_path.exists():
        yield None
        return
    store = Store(settings.store_location, read_only=True)
    try:
        yield store
    finally:
        store.close()


def _from_store(settings: Settings, last: int) -> dict[str, Any]:
    """The trade count, what each sub-account was funded with and the risk guard's day baseline; with
    `last`, also the latest trades, narrator highlights, forks, refusals and the regime table."""
    with reading(settings) as store:
        if store is None:
            return {"trades": 0, "funded": {}, "day_start_equity": None}
        book = store.get_state(BOOK_KEY) or {}
        stored: dict[str, Any] = {
            "trades": store.trade_count(), "funded": views.funded_capital(store),
            "day_start_equity": Decimal(book["day_start_equity"]) if book.get("day_start_equity") else None}
        if last:
            stored.update(last_trades=views.recent_trades(store, last), highlights=views.highlights(store, last),
                          forks=ForkRegistry(store).summaries(last), regime_table=store.regime_table(),
                          rejections=views.recent_rejections(store, last))
        return stored


def recent_candles(settings: Settings, symbol: str, n: int) -> dict[str, Any]:
    """A symbol's latest candles as the store has them, for the chart: times in market seconds, prices as
    numbers for drawing."""
    with reading(settings) as store:
        bars = store.recent_candles(symbol, n, settings.timeframe) if store else []
    return {"symbol": symbol, "timeframe": settings.timeframe,
            "candles": [{"time": c.open_time // 1000, "open": c.open, "high": c.high, "low": c.low, "close": c.close,
                         "volume": c.volume} for c in bars]}


def symbol_trades(settings: Settings, symbol: str, since_et: int) -> dict[str, Any]:
    """A symbol's trades from a market time on, oldest first, money as the store's exact strings."""
    with reading(settings) as store:
        return {"symbol": symbol, "trades": views.trades_since(store, symbol, since_et) if store else []}


def equity_curves(settings: Settings, since_et: int = 0) -> dict[str, Any]:
    """The portfolio's and each strategy's equity over market time (exact strings): the portfolio's at a
    time is the sum of the strategies' recorded at that time."""
    with reading(settings) as store:
        rows = views.equity_history(store, since_et) if store else []
    strategies: dict[str, list[dict]] = {}
    totals: dict[int, Decimal] = {}
    for row in rows:
        strategies.setdefault(row["strategy"], []).append({"time": row["event_time"], "equity": row["equity"]})
        totals[row["event_time"]] = totals.get(row["event_time"], Decimal(0)) + Decimal(row["equity"])
    return {"portfolio": [{"time": t, "equity": str(v)} for t, v in sorted(totals.items())],
            "strategies": strategies}


COUNTERS = {"mesh_messages_in_total": "messages_in", "mesh_messages_out_total": "messages_out",
            "mesh_decode_errors_total": "decode_errors", "mesh_sequence_gaps_total": "sequence_gaps"}


def service_counters(settings: Settings, timeout_s: float = 0.5) -> dict[str, dict[str, float]]:
    """Each running service's message counters, read from its own /metrics (the dashboard turns them
    into rates); a service that does not answer is left out."""
    counters: dict[str, dict[str, float]] = {}
    for name in settings.service_names():
        if name == "dashboard":
            continue
        try:
            with urllib.request.urlopen(f"http://{settings.addresses(name)[0]}:{settings.http_port(name)}/metrics",
                                        timeout=timeout_s) as answer:
                text = answer.read().decode()
        except OSError:
            continue
        totals = dict.fromkeys(COUNTERS.values(), 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in COUNTERS:
                    totals[COUNTERS[sample.name]] += sample.value
        counters[name] = totals
    return counters
