"""Small reads of the store for the services and views that are not its writers: the status view,
the allocator's start-up, the narrator's memory, the fork manager's clock. Each takes a Store."""
from __future__ import annotations

import json
from decimal import Decimal

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
    """Event time just after the last stored 1-minute candle, 0 without any: where a restarted clock resumes."""
    return store.scalar("SELECT MAX(open_time) + 60000 FROM candles") or 0


def recent_trades(store: Store, n: int) -> list[dict]:
    """The latest trades, newest first."""
    return [dict(r) for r in store.query(
        "SELECT trade_id, strategy, symbol, side, qty, price, fee, realized_pnl, event_time FROM trades "
        "ORDER BY created_at DESC, trade_id DESC LIMIT ?", (n,))]


def highlights(store: Store, n: int) -> list[dict]:
    """The narrator's latest highlights, newest first."""
    return [dict(r) for r in store.query(
        "SELECT kind, title, body, event_time FROM pr_events ORDER BY id DESC LIMIT ?", (n,))]


def trades_since(store: Store, symbol: str, since_et: int) -> list[dict]:
    """A symbol's trades from an event time on, oldest first (money as the store's exact strings)."""
    return [dict(r) for r in store.query(
        "SELECT strategy, side, qty, price, event_time, liquidity FROM trades WHERE symbol=? AND event_time>=? "
        "ORDER BY event_time, created_at", (symbol, since_et))]


def funded_capital(store: Store) -> dict[str, Decimal]:
    """What each sub-account was funded with, net of the rebalancing transfers in and out, exactly (their
    sum is the capital: transfers net to zero)."""
    funded: dict[str, Decimal] = {}
    for row in store.query("SELECT strategy, amount FROM ledger"):
        funded[row["strategy"]] = funded.get(row["strategy"], Decimal(0)) + Decimal(row["amount"])
    return funded


def equity_history(store: Store, since_et: int = 0) -> list[dict]:
    """Each strategy's equity as the executor recorded it (every 15 market minutes), oldest first."""
    return [dict(r) for r in store.query(
        "SELECT strategy, event_time, equity FROM strategy_performance WHERE event_time>=? ORDER BY event_time, "
        "strategy", (since_et,))]


def recent_rejections(store: Store, n: int) -> list[dict]:
    """The risk guard's latest refusals, newest first, with the rule and the reason."""
    return [dict(r) for r in store.query(
        "SELECT strategy, symbol, side, rule, reason, event_time FROM risk_events WHERE approved = 0 "
        "ORDER BY id DESC LIMIT ?", (n,))]
