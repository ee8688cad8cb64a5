"""The order book of record: orders, their state transitions, their trades, signals that made no order,
the fills outbox and the positions mirror. Every statement the order path runs is here.

`OrderJournal` is what the execution engine writes through: one `OrderChange` is one transaction, so
an order, its transitions and its trades are stored together or not at all.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from meshtrader.domain.money import ZERO
from meshtrader.domain.orders import Transition
from meshtrader.domain.portfolio import FUNDING, Portfolio
from meshtrader.persistence.store import Store

ORDER_COLUMNS = ("order_id, signal_id, strategy, symbol, side, qty, price, status, reason, event_time, trace_id, "
                 "created_at, order_type, expires_et")
INSERT_ORDER = f"INSERT INTO orders({ORDER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
INSERT_TRADE = ("INSERT INTO trades(trade_id, order_id, strategy, symbol, side, qty, price, fee, realized_pnl, "
                "event_time, trace_id, created_at, liquidity) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
INSERT_TRANSITION = "INSERT INTO order_events VALUES (?,?,?,?,?,?,?,?)"
UPSERT_POSITION = ("INSERT INTO positions VALUES (?,?,?,?,?) ON CONFLICT(strategy, symbol) DO UPDATE SET "
                   "qty=excluded.qty, cost=excluded.cost, updated_at=excluded.updated_at")
WORKING = ("SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED")
INSERT_FUNDING = ("INSERT INTO ledger(strategy, amount, reason, event_time, created_at, kind, symbol, ref) "
                  "VALUES (?,?,?,?,?,?,?,?)")


@dataclass(frozen=True)
class FundingEntry:
    """A funding settlement on one sub-account's position: received (+) or paid (-)."""

    strategy: str
    symbol: str
    amount: Decimal
    event_time: int
    ref: str  # unique: the settlement and the sub-account (paper), or the exchange's income id (live)
    reason: str


@dataclass(frozen=True)
class OrderRow:
    order_id: str
    signal_id: str
    strategy: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal | None  # a limit's price, or a filled order's average
    status: str
    reason: str
    event_time: int
    trace_id: str
    created_at: float
    order_type: str  # market / limit
    expires_et: int | None

    def values(self) -> tuple:
        return (self.order_id, self.signal_id, self.strategy, self.symbol, self.side, str(self.qty),
                None if self.price is None else str(self.price), self.status, self.reason, self.event_time,
                self.trace_id, self.created_at, self.order_type, self.expires_et)


@dataclass(frozen=True)
class TradeRow:
    trade_id: str
    order_id: str
    strategy: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal
    event_time: int
    trace_id: str
    created_at: float
    liquidity: str

    def values(self) -> tuple:
        return (self.trade_id, self.order_id, self.strategy, self.symbol, self.side, str(self.qty), str(self.price),
                str(self.fee), str(self.realized_pnl), self.event_time, self.trace_id, self.created_at, self.liquidity)


@dataclass(frozen=True)
class OrderChange:
    """What one step of an order's life writes, atomically: a new order's row (or the new status of a known
    one, with the reason it ended), its transitions and its trades."""

    new_order: OrderRow | None
    transitions: Sequence[Transition]
    trades: Sequence[TradeRow]
    event_time: int
    created_at: float
    status: str | None = None  # a known order's new status
    reason: str | None = None  # and, when it ended, why


@dataclass(frozen=True)
class SavedOrder:
    """An order that was working when the process stopped, with what is already booked of it."""

    row: OrderRow
    last_seq: int
    filled: Decimal
    booked: frozenset[str] = field(default_factory=frozenset)  # venue trade ids


def transition_values(steps: Iterable[Transition], event_time: int, now: float) -> list[tuple]:
    return [(s.order_id, s.seq, s.before, s.after, str(s.filled_qty), s.reason, event_time, now) for s in steps]


def order_row(row: Any) -> OrderRow:
    return OrderRow(row["order_id"], row["signal_id"], row["strategy"], row["symbol"], row["side"], Decimal(row["qty"]),
                    None if row["price"] is None else Decimal(row["price"]), row["status"], row["reason"] or "",
                    row["event_time"], row["trace_id"] or "0", row["created_at"], row["order_type"], row["expires_et"])


class OrderJournal:
    """The execution engine's journal on the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, change: OrderChange) -> None:
        with self.store.transaction() as db:
            if change.new_order is not None:
                db.execute(INSERT_ORDER, change.new_order.values())
            elif change.reason is not None:
                db.execute("UPDATE orders SET status=?, reason=? WHERE order_id=?",
                           (change.status, change.reason, change.transitions[0].order_id))
            elif change.status is not None:
                db.execute("UPDATE orders SET status=? WHERE order_id=?",
                           (change.status, change.transitions[0].order_id))
            if change.trades:
                db.executemany(INSERT_TRADE, [t.values() for t in change.trades])
            db.executemany(INSERT_TRANSITION, transition_values(change.transitions, change.event_time,
                                                                change.created_at))

    def outcome(self, signal: Any, outcome: str) -> None:
        """A signal that makes no order is still recorded, so a restart will not act on it.
        (A signal that makes an order is recorded by the order's UNIQUE signal_id.)"""
        self.store.execute("INSERT INTO signals VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (signal.signal_id, signal.strategy, signal.symbol, signal.side, signal.confidence,
                            signal.reason, repr(signal.price), signal.et, f"{signal.tid:016x}", outcome, time.time()))

    def rebuild(self, previous: Portfolio) -> Portfolio:
        """The books as the store has them (after a write the store refused), keeping the marks."""
        portfolio = Portfolio.rebuild(self.store.ledger(), self.store.trades(), **previous.books())
        portfolio.marks.update(previous.marks)
        portfolio.restore_units(previous.units_state())
        return portfolio

    def funding(self, payments: Sequence[FundingEntry]) -> list[FundingEntry]:
        """Funding settlements as ledger entries, each once (a ref seen before is skipped): the ones new."""
        if not payments:
            return []
        refs = [p.ref for p in payments]
        known = {r[0] for r in self.store.query(f"SELECT ref FROM ledger WHERE ref IN ({','.join('?' * len(refs))})",
                                                tuple(refs))}
        new = [p for p in payments if p.ref not in known]
        now = time.time()
        with self.store.transaction() as db:
            db.executemany(INSERT_FUNDING, [(p.strategy, str(p.amount), p.reason, p.event_time, now, FUNDING, p.symbol,
                                             p.ref) for p in new])
        return new

    def last_funding(self, symbol: str) -> int:
        """The market time of the latest funding settlement booked on `symbol` (0: none yet): settlements are
        handled in order, so every earlier one has been."""
        return self.store.scalar("SELECT MAX(event_time) FROM ledger WHERE kind=? AND symbol=?", (FUNDING, symbol)) or 0

    def positions_at(self, symbol: str, event_time: int, last_held: bool = False) -> dict[str, Decimal]:
        """Each strategy's signed position in `symbol` as of a market time, from its trades (a futures
        settlement is owed by whoever held the position then, even if it has been closed since). With
        `last_held`, if all were flat then: the positions of the latest moment before it when one was open."""
        held: dict[str, Decimal] = {}
        open_before: dict[str, Decimal] = {}
        for strategy, side, qty in self.store.query("SELECT strategy, side, qty FROM trades WHERE symbol = ? AND "
                                                    "event_time <= ? ORDER BY event_time, created_at",
                                                    (symbol, event_time)):
            held[strategy] = held.get(strategy, ZERO) + (Decimal(qty) if side == "buy" else -Decimal(qty))
            if any(held.values()):
                open_before = {name: qty for name, qty in held.items() if qty}
        now = {strategy: qty for strategy, qty in held.items() if qty}
        return now or (open_before if last_held else {})

    def working_orders(self) -> list[SavedOrder]:
        rows = self.store.query(
            "SELECT o.*, (SELECT MAX(seq) FROM order_events e WHERE e.order_id = o.order_id) AS last_seq "
            f"FROM orders o WHERE status IN ({','.join('?' * len(WORKING))})", WORKING)
        saved = []
        for row in rows:
            order_id = row["order_id"]
            trades = self.store.query("SELECT trade_id, qty FROM trades WHERE order_id = ?", (order_id,))
            saved.append(SavedOrder(order_row(row), row["last_seq"] or 0, sum((Decimal(t[1]) for t in trades), ZERO),
                                    frozenset(t[0].removeprefix(order_id + "-") for t in trades)))
        return saved

    def booked_venue_trade_ids(self) -> set[str]:
        """The venue's ids of every trade in the store (a trade id is `<order id>-<venue trade id>`)."""
        return {r[0].rsplit("-", 1)[-1] for r in self.store.query("SELECT trade_id FROM trades")}

    def known_order_ids(self, order_ids: set[str]) -> set[str]:
        if not order_ids:
            return set()
        ids = sorted(order_ids)
        return {r[0] for r in self.store.query(
            f"SELECT order_id FROM orders WHERE order_id IN ({','.join('?' * len(ids))})", tuple(ids))}

    def seen_signal_ids(self) -> set[str]:
        return self.store.seen_signal_ids()

    # ----- the outbox and the positions mirror, off the order path ------------------------------------------
    def unpublished_trades(self) -> list[TradeRow]:
        """Trades whose fill a crash cut off between the commit and the publish (the outbox)."""
        return [TradeRow(r["trade_id"], r["order_id"], r["strategy"], r["symbol"], r["side"], Decimal(r["qty"]),
                         Decimal(r["price"]), Decimal(r["fee"]), Decimal(r["realized_pnl"]), r["event_time"] or 0,
                         r["trace_id"] or "0", r["created_at"], r["liquidity"])
                for r in self.store.query("SELECT * FROM trades WHERE published = 0 ORDER BY created_at, trade_id")]

    def refresh_positions(self, portfolio: Portfolio) -> list[tuple[tuple[str, str], Decimal | None, Decimal | None]]:
        """The trades are the truth; the positions table mirrors them within 100 ms, so after a crash it
        may lag by the last few fills: the rows that differ are rewritten, and returned as (key, stored,
        from the trades)."""
        stored = {(r["strategy"], r["symbol"]): Decimal(r["qty"])
                  for r in self.store.query("SELECT strategy, symbol, qty FROM positions")}
        rebuilt = {(a.strategy, sym): p.qty for a in portfolio.accounts.values() for sym, p in a.positions.items()}
        stale = [(key, stored.get(key), rebuilt.get(key)) for key in sorted(set(stored) | set(rebuilt))
                 if stored.get(key, ZERO) != rebuilt.get(key, ZERO)]
        if stale:
            self.sync([], [key for key, _, _ in stale], portfolio)
        return stale

    def sync(self, published: list[str], touched: Iterable[tuple[str, str]], portfolio: Portfolio) -> None:
        """Mark fills as published (the outbox) and mirror the positions (strategy, symbol) that moved."""
        now = time.time()
        rows = []
        for strategy, symbol in touched:
            position = portfolio.accounts[strategy].positions.get(symbol)
            qty, cost = (position.qty, position.cost) if position else (ZERO, ZERO)
            rows.append((strategy, symbol, str(qty), str(cost), now))
        with self.store.transaction() as db:
            db.executemany("UPDATE trades SET published = 1 WHERE trade_id = ?", [(i,) for i in published])
            db.executemany(UPSERT_POSITION, rows)
