"""Small reads of the store for the services and views that are not its writers: the status view,
the allocator's start-up, the narrator's memory, the fork manager's clock. Each takes a Store."""
from __future__ import annotations

import json
from decimal import Decimal

from meshtrader.domain.candles import timeframe_ms
from meshtrader.persistence.store import Store


def last_allocation(store: Store) -> tuple[dict[str, Decimal], str] | None:
    """The allocation decided last (weights, reason), or None before the first."""
    rows = store.query("SELECT weights, reason FROM allocations ORDER BY id DESC LIMIT 1")
    if not rows:
        return None
    return {k: Decimal(v) for k, v in json.loads(rows[0]["weights"]).items()}, rows[0]["reason"]


def narrated(store: Store, kind: str) -> bool:
    """Whether the narrator has told a story of this kind (e.g. the first trade) already."""
    return bool(store.scalar("SELECT 1 FROM pr_events WHERE kind=? LIMIT 1", (kind,)))


def candles_end(store: Store) -> int:
    """Event time just after the last stored candle (of any timeframe), 0 without any: where a restarted
    clock resumes."""
    row = store.query("SELECT open_time, tf FROM candles ORDER BY open_time DESC LIMIT 1")
    return row[0][0] + timeframe_ms(row[0][1]) if row else 0


def recent_trades(store: Store, n: int) -> list[dict]:
    """The latest trades, newest first."""
    return store.records(
        "SELECT trade_id, strategy, symbol, side, qty, price, fee, realized_pnl, event_time FROM trades "
        "ORDER BY created_at DESC, trade_id DESC LIMIT ?", (n,))


def highlights(store: Store, n: int, kind: str | None = None) -> list[dict]:
    """The narrator's latest highlights, newest first; only those of one kind if given."""
    where, params = ("WHERE kind=? ", (kind, n)) if kind else ("", (n,))
    return store.records(
        f"SELECT kind, title, body, event_time FROM pr_events {where}ORDER BY id DESC LIMIT ?", params)


def trades_since(store: Store, symbol: str, since_et: int) -> list[dict]:
    """A symbol's trades from an event time on, oldest first (money as the store's exact strings)."""
    return store.records(
        "SELECT strategy, side, qty, price, event_time, liquidity FROM trades WHERE symbol=? AND event_time>=? "
        "ORDER BY event_time, created_at", (symbol, since_et))


def funded_capital(store: Store) -> dict[str, Decimal]:
    """What each sub-account was funded with, net of the rebalancing transfers in and out, exactly (their
    sum is the capital: transfers net to zero)."""
    funded: dict[str, Decimal] = {}
    for row in store.query("SELECT strategy, amount FROM ledger"):
        funded[row["strategy"]] = funded.get(row["strategy"], Decimal(0)) + Decimal(row["amount"])
    return funded


def equity_history(store: Store, since_et: int = 0) -> list[dict]:
    """Each strategy's equity as the executor recorded it (every 15 market minutes), oldest first."""
    return store.records(
        "SELECT strategy, event_time, equity, created_at FROM strategy_performance WHERE event_time>=? "
        "ORDER BY event_time, strategy", (since_et,))


def recent_rejections(store: Store, n: int) -> list[dict]:
    """The risk guard's latest refusals, newest first, with the rule and the reason."""
    return store.records(
        "SELECT strategy, symbol, side, rule, reason, event_time FROM risk_events WHERE approved = 0 "
        "ORDER BY id DESC LIMIT ?", (n,))


def candles_start(store: Store) -> int | None:
    """Open time of the first stored candle, None without any: no backtest on a copy of the store starts earlier."""
    return store.scalar("SELECT MIN(open_time) FROM candles")


def trade_results(store: Store) -> list[dict]:
    """Every trade's strategy, fee and realized P&L (exact strings) and event time, oldest first: what the
    per-strategy statistics are computed from."""
    return store.records(
        "SELECT strategy, fee, realized_pnl, event_time FROM trades ORDER BY event_time, created_at")


def allocation_history(store: Store) -> list[tuple[int, dict[str, Decimal]]]:
    """Every allocation decided, oldest first: (event time, weights as exact fractions)."""
    return [(r["event_time"], {k: Decimal(v) for k, v in json.loads(r["weights"]).items()})
            for r in store.query("SELECT event_time, weights FROM allocations ORDER BY id")]


def params_adoptions(store: Store) -> dict[str, float]:
    """When each strategy last adopted optimised parameters (unix seconds), from the allocator's journal."""
    adopted: dict[str, float] = {}
    for row in store.query("SELECT detail, created_at FROM agent_events WHERE event=? ORDER BY id",
                           ("params_adopted",)):
        adopted[json.loads(row["detail"])["strategy"]] = row["created_at"]
    return adopted


def fork_results(store: Store, purpose: str, n: int) -> list[dict]:
    """The newest forks of a purpose that recorded results, with them parsed: for the dashboard's look-ups
    of what a kind of fork produced (the registry reads rows for the fork manager's own needs)."""
    return [{"fork_id": r["fork_id"], "created_et": r["created_et"], "results": json.loads(r["results"])}
            for r in store.query("SELECT fork_id, created_et, results FROM fork_tracking WHERE purpose=? AND "
                                 "results IS NOT NULL ORDER BY created_at DESC LIMIT ?", (purpose, n))]


def fork_lifetimes(store: Store) -> list[dict]:
    """Every fork's purpose, status and wall-clock birth and death, without its results: cheap enough to
    total the time spent per purpose over the mesh's whole life."""
    return store.records("SELECT purpose, status, created_at, destroyed_at FROM fork_tracking")


def regime_changes(store: Store, n: int) -> list[dict]:
    """The latest confirmed regime changes, oldest first, each with the reading's metrics parsed."""
    rows = store.query("SELECT event_time, regime, metrics FROM market_regimes ORDER BY id DESC LIMIT ?", (n,))
    return [{"event_time": r["event_time"], "regime": r["regime"], "metrics": json.loads(r["metrics"] or "{}")}
            for r in reversed(rows)]


def agent_events_after(store: Store, service: str, after_id: int) -> list[tuple[int, str, str]]:
    """A service's journal entries after one already read, oldest first: (id, event, detail JSON)."""
    return [(r["id"], r["event"], r["detail"]) for r in store.query(
        "SELECT id, event, detail FROM agent_events WHERE service=? AND id>? ORDER BY id", (service, after_id))]
