"""The records the assistant answers "what happened" from, each with the key it is cited by (a row id, an order
id, a fork id). Reads only; every function takes a Store (SQLite or PostgreSQL) and returns plain dicts, newest
first unless said otherwise."""
from __future__ import annotations

from meshtrader.persistence.store import Store

RISK_EVENT_COLUMNS = "id, request_id, strategy, symbol, side, approved, rule, reason, trading_state, event_time"


def risk_events(store: Store, n: int, strategy: str | None = None, refused_only: bool = False,
                before_et: int | None = None) -> list[dict]:
    """The risk guard's decisions and trading-state changes, newest first: those about one strategy if given (its
    orders' verdicts, and the state changes that name it), refusals only if asked, up to a market time if given."""
    where, params = ["1=1"], []
    if strategy is not None:
        where.append("(strategy = ? OR (request_id IS NULL AND reason LIKE ?))")
        params += [strategy, f"%{strategy}%"]
    if refused_only:
        where.append("approved = 0")
    if before_et is not None:
        where.append("event_time <= ?")
        params.append(before_et)
    return store.records(
        f"SELECT {RISK_EVENT_COLUMNS} FROM risk_events WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
        (*params, n))


def state_changes(store: Store, n: int) -> list[dict]:
    """Trading-state changes and controls (kill switch, pause, limit changes, drawdown and loss trips), newest first."""
    return store.records(
        f"SELECT {RISK_EVENT_COLUMNS} FROM risk_events WHERE request_id IS NULL ORDER BY id DESC LIMIT ?", (n,))


def signals(store: Store, strategy: str, n: int) -> list[dict]:
    """A strategy's latest signals with what became of each (the executor's outcome)."""
    return store.records(
        "SELECT signal_id, strategy, symbol, side, confidence, reason, price, event_time, outcome FROM signals "
        "WHERE strategy = ? ORDER BY event_time DESC, received_at DESC LIMIT ?", (strategy, n))


def last_trade(store: Store, strategy: str) -> dict | None:
    """A strategy's latest fill."""
    rows = store.query("SELECT trade_id, order_id, strategy, symbol, side, qty, price, fee, realized_pnl, event_time "
                       "FROM trades WHERE strategy = ? ORDER BY event_time DESC, created_at DESC LIMIT 1", (strategy,))
    return dict(rows[0]) if rows else None


def order(store: Store, order_id: str) -> dict | None:
    """One order (by its id, or by the id of the signal behind it), with its state changes, the risk guard's verdicts
    on it, its fills and the signal that asked for it."""
    rows = store.query("SELECT order_id, signal_id, strategy, symbol, side, qty, price, status, reason, event_time, "
                       "order_type FROM orders WHERE order_id = ? OR signal_id = ?", (order_id, order_id))
    if not rows:
        return None
    found = dict(rows[0])
    key = found["order_id"]
    found["events"] = store.records(
        "SELECT seq, from_status, to_status, filled_qty, reason, event_time FROM order_events WHERE order_id = ? "
        "ORDER BY seq", (key,))
    found["verdicts"] = store.records(
        f"SELECT {RISK_EVENT_COLUMNS} FROM risk_events WHERE request_id = ? ORDER BY id", (key,))
    found["fills"] = store.records(
        "SELECT trade_id, qty, price, fee, realized_pnl, liquidity, event_time FROM trades WHERE order_id = ? "
        "ORDER BY event_time, created_at", (key,))
    signal = store.query("SELECT signal_id, side, confidence, reason, price, event_time, outcome FROM signals "
                         "WHERE signal_id = ?", (found["signal_id"],))
    found["signal"] = dict(signal[0]) if signal else None
    return found


def rejected_orders(store: Store, n: int, strategy: str | None = None) -> list[dict]:
    """The latest orders that were refused (by the risk guard, the slippage check, or the exchange)."""
    where, params = ("AND strategy = ? ", (strategy, n)) if strategy else ("", (n,))
    return store.records(
        f"SELECT order_id, strategy, symbol, side, qty, reason, event_time FROM orders WHERE status = 'REJECTED' "
        f"{where}ORDER BY event_time DESC, created_at DESC LIMIT ?", params)


def allocations(store: Store, n: int) -> list[dict]:
    """The allocator's latest decisions: the weights (JSON of exact fractions) and the reason."""
    return store.records(
        "SELECT id, event_time, weights, reason FROM allocations ORDER BY id DESC LIMIT ?", (n,))


def fork(store: Store, fork_id: str) -> dict | None:
    """One fork's record (results as JSON text)."""
    rows = store.query("SELECT fork_id, backend, purpose, requester, status, created_et, expires_et, results "
                       "FROM fork_tracking WHERE fork_id = ?", (fork_id,))
    return dict(rows[0]) if rows else None


def latest_forks(store: Store, purpose: str | None, n: int, with_results: bool = False) -> list[dict]:
    """The newest forks (of one purpose if given; only those that recorded results if asked)."""
    where, params = ["1=1"], []
    if purpose:
        where.append("purpose = ?")
        params.append(purpose)
    if with_results:
        where.append("results IS NOT NULL")
    return store.records(
        "SELECT fork_id, backend, purpose, requester, status, created_et, expires_et, results FROM fork_tracking "
        f"WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ?", (*params, n))


def regimes(store: Store, n: int) -> list[dict]:
    """The regime detector's latest confirmed changes, with the reading's metrics (JSON text)."""
    return store.records(
        "SELECT id, event_time, regime, metrics FROM market_regimes ORDER BY id DESC LIMIT ?", (n,))


def highlights(store: Store, n: int) -> list[dict]:
    """The narrator's latest highlights."""
    return store.records(
        "SELECT id, kind, title, body, event_time FROM pr_events ORDER BY id DESC LIMIT ?", (n,))


def adoptions(store: Store, strategy: str, n: int) -> list[dict]:
    """The optimised parameters a strategy adopted (the allocator's journal), newest first; detail as JSON text."""
    return store.records(
        "SELECT id, detail, created_at FROM agent_events WHERE service = 'allocator' AND event = 'params_adopted' "
        "AND detail LIKE ? ORDER BY id DESC LIMIT ?", (f'%"strategy": "{strategy}"%', n))
