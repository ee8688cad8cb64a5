"""The execution engine: signal -> planned order -> risk approval -> venue -> fills -> portfolio -> journal.

No sockets here: the executor service feeds it signals, ticks and books and hands its events to the
bus; the backtester drives the very same engine over candles with an in-memory journal. Whatever the
venue (the paper matching engine or an exchange through ccxt), an order moves through the same state
machine and its fills are booked by the same code, from the venue's `VenueReport`s.

Order of work for each signal, so that a crash at any point neither loses nor duplicates a trade:
1. a signal id already seen is dropped (in memory here, and a UNIQUE key in the store across restarts);
2. the risk guard must approve (no answer = rejected: approval fails closed);
3. a remote venue's order is journaled SUBMITTED before it leaves (a lost answer is looked up by its
   client id); a paper order is journaled with its fills in one transaction;
4. only after the journal has committed are fills and order updates published.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

import msgspec

from meshtrader.domain.futures import FUNDING_INTERVAL_MS, funding_payment
from meshtrader.domain.money import LIQUIDATION, MAKER, TAKER, ZERO, cash, instrument, to_decimal
from meshtrader.domain.orders import Order, OrderStatus, Transition
from meshtrader.domain.portfolio import Portfolio, outlay
from meshtrader.execution.journal import FundingEntry, Journal, MemoryJournal
from meshtrader.execution.planning import (
    EXITS,
    MarkHistory,
    OrderRules,
    PlannedOrder,
    approval_request,
    plan_order,
    slippage_problem,
)
from meshtrader.execution.reconciliation import reconcile, reconcile_positions
from meshtrader.execution.venue import OrderRequest, Venue, VenueFill, VenueRejected, VenueReport, VenueUnavailable
from meshtrader.persistence.orders import OrderChange, OrderRow, TradeRow
from meshtrader.runtime.log import Logger
from meshtrader.wire.messages import (
    Approval,
    ApproveOrder,
    ClosedAll,
    Fill,
    OrderBook,
    OrderUpdate,
    Signal,
    VenueStatus,
)


class ExecutionEvents(Protocol):
    """Where the engine's events go once the journal has them: the bus in the mesh, a list in a backtest."""

    def fill(self, fill: Fill) -> None: ...
    def order(self, update: OrderUpdate) -> None: ...
    def venue_status(self, status: VenueStatus) -> None: ...
    def margin_call(self, strategy: str, symbol: str, ratio: Decimal) -> None: ...


Approver = Callable[[ApproveOrder], Approval | str]  # the risk rules' verdict, or why there is none
# An in-process approver's refusal of a signal's order whatever its numbers (its book is halted), or None:
# asked where the approver would be, so a refused order costs no approval request.
StandingRefusal = Callable[[Signal], Approval | None]

# A remote futures venue's income history is read once just after each settlement (a read weighs 30 of
# Binance's request weight: ~1.5 s of the rate limit), this long after it in market time.
FUNDING_BOOKED_MS = 60_000
END_STATES = {"canceled": OrderStatus.CANCELED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED}


def end_state(order: Order, venue_status: str) -> OrderStatus:
    """The state an order the venue closed unfilled (or part-filled) ends in: the venue's own word where
    the state machine allows it from here, else EXPIRED."""
    wanted = END_STATES.get(venue_status, OrderStatus.EXPIRED)
    return wanted if order.can_move(wanted) else OrderStatus.EXPIRED


def order_id_for(signal_id: str) -> str:
    """Deterministic, exchange-safe client order id (Binance allows 36 chars of [A-Za-z0-9_-])."""
    return "mt" + hashlib.blake2b(signal_id.encode(), digest_size=12).hexdigest()


@dataclass
class WorkingOrder:
    """An order the engine follows until it ends: resting at the venue, or sent without an answer yet."""

    order: Order
    request: OrderRequest
    signal_id: str
    tid: int
    sent_at: float  # wall clock: when an order the venue does not know can be called lost
    expires_et: int | None = None
    reserved: Decimal = ZERO  # cash a resting buy holds back from its strategy
    booked: set[str] = field(default_factory=set)  # venue trade ids already in the books
    cancel_reason: str = ""  # why a cancel was asked for, until the venue confirms it
    origin_ns: int = 0  # the tick that caused it (wall clock ns, as every send stamp: comparable across hosts), for tick-to-fill on its first fill

    @property
    def unanswered(self) -> bool:
        return self.order.status == OrderStatus.SUBMITTED


class ExecutionEngine:
    def __init__(self, portfolio: Portfolio, venue: Venue, rules: OrderRules, approve: Approver, journal: Journal,
                 events: ExecutionEvents, log: Logger, *, source: str = "executor", order_timeout_s: float = 300.0,
                 signal_ttl_s: float = 30.0, tolerance: Decimal = Decimal("0.01"), symbols: list[str] = (),
                 standing_refusal: StandingRefusal | None = None,
                 margin_levels: tuple[Decimal, ...] = (Decimal("0.5"), Decimal("0.8"))) -> None:
        """`margin_levels`: futures margin ratios the risk guard acts at (reduce only, close): crossing one
        is told to `events.margin_call` at once, and a position reaching 1 is liquidated (a paper venue's
        exchange would)."""
        self.portfolio, self.venue, self.rules, self.approve = portfolio, venue, rules, approve
        self.margin_levels = margin_levels
        # futures: per symbol, the marks at which a position's margin ratio reaches each level, then 1:
        # (strategy, is long, [(price, level), ...] nearest first); ticks are checked against the nearest only
        self.watched: dict[str, dict[str, tuple[bool, list[tuple[Decimal, Decimal]]]]] = {}
        self.standing_refusal = standing_refusal
        self.journal, self.events, self.log, self.source = journal, events, log, source
        self.journaling = not isinstance(journal, MemoryJournal)  # a backtest's keeps nothing: rows go unbuilt
        self.order_timeout_ms = int(order_timeout_s * 1000)
        self.signal_ttl_s, self.tolerance, self.symbols = signal_ttl_s, tolerance, list(symbols)
        self.marks = MarkHistory()
        self.working: dict[str, WorkingOrder] = {}
        self.seen: set[str] = set()
        self.event_time = 0
        self.started = not venue.remote  # a remote venue first settles in-flight orders and reconciles
        self.blocked = ""  # why remote orders are refused (not yet reconciled, books that disagree)
        self.venue_down = ""  # the error while the venue does not answer
        self.duplicates = 0
        self.unpublished: list[str] = []  # trade ids published since the journal last marked them
        self.touched: set[tuple[str, str]] = set()  # (strategy, symbol) whose position moved
        self.signal_ns = self.received_ns = self.approved_ns = 0  # the order path's timestamps, carried on the fill
        self.funding_since = 0  # a remote futures venue's income history is read from here on (ms)
        self.funding_due = 0  # market time of its next read: at start, then just after each settlement

    # ----- market data --------------------------------------------------------------------------------
    def on_tick(self, symbol: str, event_time: int, price: Decimal) -> None:
        if self.marks.record(symbol, event_time, price):
            self.portfolio.mark(symbol, price)
        if event_time > self.event_time:
            self.event_time = event_time
        if self.working:
            for order_id, report in self.venue.on_trade(symbol, price):
                if (working := self.working.get(order_id)) is not None:
                    self.apply(working, report, event_time)
        if symbol in self.watched:
            self.check_margin(symbol, price, event_time)

    # ----- futures: margin levels, liquidation, funding ---------------------------------------------------
    def watch(self, strategy: str, symbol: str) -> None:
        """The marks at which a futures position reaches each margin level and its liquidation price."""
        if not self.portfolio.futures:
            return
        position = self.portfolio.accounts[strategy].positions.get(symbol)
        watched = self.watched.setdefault(symbol, {})
        if position is None or not position.qty:
            watched.pop(strategy, None)
        else:
            tick = instrument(symbol).price_tick
            levels = [(price, level) for level in (*self.margin_levels, Decimal(1))
                      if (price := self.portfolio.threshold(strategy, symbol, level, tick)) is not None]
            watched[strategy] = (position.qty > 0, levels)
        if not watched:
            del self.watched[symbol]

    def check_margin(self, symbol: str, price: Decimal, event_time: int) -> None:
        """A tick against the watched levels: a level reached is a margin call (the last, liquidation)."""
        for strategy, (long, levels) in list(self.watched.get(symbol, {}).items()):
            reached = [(at, level) for at, level in levels if (price <= at if long else price >= at)]
            if not reached:
                continue
            at, level = reached[-1]
            if level == 1 and not self.venue.remote:  # an exchange liquidates itself: its trade comes as any other
                self.liquidate(strategy, symbol, at, event_time)
                continue
            if strategy in (watched := self.watched.get(symbol, {})):
                watched[strategy] = (long, [(p, lv) for p, lv in levels if lv > level])
            self.events.margin_call(strategy, symbol, level)

    def liquidate(self, strategy: str, symbol: str, price: Decimal, event_time: int) -> None:
        """Close a position whose margin fell to maintenance, at its liquidation price with the liquidation
        fee, as the exchange does: recorded as an order of its own (the paper venue is this exchange)."""
        side, qty, fee_due = self.portfolio.liquidation(strategy, symbol, price)
        signal_id = f"liquidation:{strategy}:{symbol}:{event_time}"
        order_id = order_id_for(signal_id)
        request = OrderRequest(order_id, strategy, symbol, side, qty, price, False, reduce_only=True)
        working = WorkingOrder(Order(order_id, qty), request, signal_id, 0, time.time())
        submitted = working.order.move(OrderStatus.SUBMITTED, "liquidation: margin fell to maintenance")
        fill = VenueFill("1", qty, price, fee_due, LIQUIDATION, f"liquidated at {price}")
        self.log.warning("liquidated", strategy=strategy, symbol=symbol, side=side, qty=str(qty), price=str(price),
                         fee=str(fee_due))
        self.apply(working, VenueReport((fill,)), event_time, [submitted],
                   f"liquidation: {strategy}'s {symbol} margin fell to maintenance at {price}")

    def settle_funding(self, symbol: str, rate: Decimal, mark: Decimal, event_time: int,
                       holders: dict[str, Decimal]) -> list[FundingEntry]:
        """A funding settlement of `symbol` (paper and backtest) on the positions held up to it (`holders`:
        strategy -> signed quantity; an order of the bar that closes at the settlement comes after it), at
        the mark, booked once per settlement and sub-account (the ledger's ref); the entries booked."""
        due = [FundingEntry(name, symbol, funding_payment(qty, mark, rate), event_time,
                            f"funding:{symbol}:{event_time}:{name}", f"funding {rate} on {qty} {symbol} at mark {mark}")
               for name, qty in sorted(holders.items()) if qty]
        return self.book_funding(due)

    def collect_funding(self) -> None:
        """A remote futures venue settles funding itself: what its income history booked since the last look
        goes into the ledger, split across the sub-accounts that held the symbol at the settlement (their
        trades say so) in proportion to their positions (exact: the remainder to the last), each share
        booked once (the venue's id, the account)."""
        payments = self.venue.funding_payments(self.symbols, self.funding_since)
        entries = []
        for payment in payments:
            holders = [(name, abs(qty)) for name, qty in sorted(self.holders_at(payment.symbol, payment.time_ms).items())]
            if not holders:
                self.log.warning("funding_unassigned", symbol=payment.symbol, amount=str(payment.amount),
                                 why="no sub-account holds the symbol now")
                continue
            held = sum((qty for _, qty in holders), ZERO)
            shares = [cash(payment.amount * qty / held) for _, qty in holders]
            shares[-1] += payment.amount - sum(shares, ZERO)
            entries += [FundingEntry(name, payment.symbol, share, payment.time_ms, f"{payment.payment_id}:{name}",
                                     f"exchange funding {payment.amount} on {payment.symbol}")
                        for (name, _), share in zip(holders, shares, strict=True)]
            self.funding_since = max(self.funding_since, payment.time_ms)
        self.book_funding(entries)

    def holders_at(self, symbol: str, time_ms: int) -> dict[str, Decimal]:
        """Who held `symbol` at an exchange's settlement, by the books' trades. A trade is stamped with its
        signal's market time (a close-all with the last one the executor saw) and executes later at the
        exchange: if the books are flat then, the exchange still held the last position they had open."""
        return self.journal.positions_at(symbol, time_ms, last_held=True)

    def book_funding(self, entries: list[FundingEntry]) -> list[FundingEntry]:
        """Funding entries (paper settlements, or an exchange's income history) into the ledger and the
        books; those already booked are skipped."""
        booked = self.journal.funding(entries) if entries else []
        for entry in booked:
            self.portfolio.credit_funding(entry.strategy, entry.amount)
        return booked

    def on_book(self, book: OrderBook) -> None:
        self.venue.on_book(book)

    # ----- signals -----------------------------------------------------------------------------------
    def on_signal(self, signal: Signal) -> None:
        """A strategy's signal from the bus: deduplicated, refused when stale, executed at the marks as of
        its event time (however late it arrives, so the mesh and the backtester agree bar for bar)."""
        self.signal_ns, self.received_ns = signal.st, time.time_ns()
        if signal.signal_id in self.seen:
            self.duplicates += 1
            return
        self.seen.add(signal.signal_id)
        if signal.et > self.event_time:
            self.event_time = signal.et
        if signal.strategy not in self.portfolio.accounts:
            return self.journal.outcome(signal, f"no sub-account for strategy {signal.strategy!r}")
        waited_s = (time.time_ns() - signal.st) / 1e9
        if waited_s > self.signal_ttl_s:
            return self.journal.outcome(signal, f"stale: waited {waited_s:.1f}s")
        price = to_decimal(signal.price)
        if self.marks.record(signal.symbol, signal.et, price):
            self.portfolio.mark(signal.symbol, price)
        latest, self.portfolio.marks = self.portfolio.marks, self.marks.as_of(signal.et, signal.symbol, price)
        try:
            self.execute(signal)
        finally:
            self.portfolio.marks = latest

    def execute(self, signal: Signal, close_all: bool = False) -> None:
        """Plan, approve and submit at the portfolio's current marks. On futures an entry against a
        position held the other way first closes it (its own order, `<signal id>:exit`)."""
        if signal.side in EXITS and self.working:  # an exit first withdraws the strategy's resting entries there
            for working in [w for w in self.working.values() if w.request.limit and not w.cancel_reason
                            and (w.request.strategy, w.request.symbol) == (signal.strategy, signal.symbol)]:
                self.cancel(working, f"canceled by the exit signal {signal.signal_id}")
        if self.portfolio.futures and signal.side in ("buy", "short"):
            position = self.portfolio.accounts[signal.strategy].positions.get(signal.symbol)
            if position is not None and position.qty and (position.qty > 0) != (signal.side == "buy"):
                exit_side = "sell" if position.qty > 0 else "cover"
                self.execute(msgspec.structs.replace(signal, side=exit_side, signal_id=signal.signal_id + ":exit",
                                                     reason=f"{exit_side} before the {signal.side}: {signal.reason}"))
        planned = plan_order(self.portfolio, signal.strategy, signal.symbol, signal.side, self.rules, signal.bar_volume,
                             signal.confidence, signal.volatility)
        if isinstance(planned, str):
            return self.journal.outcome(signal, planned)
        order_id = order_id_for(signal.signal_id)
        if planned.liquidity == TAKER:
            budget = self.portfolio.accounts[planned.strategy].free_cash if planned.side == "buy" and \
                not self.portfolio.futures else None
            walked = self.venue.expected_slippage_bp(planned.symbol, planned.side, planned.qty,
                                                     self.portfolio.marks[planned.symbol], budget)
            if walked is not None:
                planned = planned._replace(slippage_bp=walked)
        if (problem := slippage_problem(planned, self.rules)) is not None:
            return self.reject(signal, order_id, planned.qty, "slippage_tolerance", problem)
        if self.venue.remote and (refusal := self.remote_refusal(signal)) is not None:
            return self.reject(signal, order_id, planned.qty, "live_blocked", refusal)
        reply = None if close_all or self.standing_refusal is None else self.standing_refusal(signal)
        if reply is None:
            reply = self.approve(approval_request(self.portfolio, planned, order_id, signal.et, signal.stop, close_all,
                                                  src=self.source, tid=signal.tid))
        if not isinstance(reply, Approval):
            return self.reject(signal, order_id, planned.qty, "risk_unavailable", str(reply))
        if not reply.approved:
            return self.reject(signal, order_id, planned.qty, reply.rule, reply.reason)
        self.approved_ns = time.time_ns()
        self.submit(signal, order_id, planned)

    def submit(self, signal: Signal, order_id: str, planned: PlannedOrder) -> None:
        limit = planned.liquidity == MAKER
        request = OrderRequest(order_id, signal.strategy, signal.symbol, planned.side, planned.qty, planned.price, limit,
                               reduce_only=planned.reduces and self.portfolio.futures)
        order = Order(order_id, planned.qty)
        expires = signal.et + self.order_timeout_ms if limit else None
        working = WorkingOrder(order, request, signal.signal_id, signal.tid, time.time(), expires,
                               origin_ns=signal.origin_ns)
        if limit:
            self.hold_back(working)
        if not self.venue.remote:  # the answer is immediate: the order and its fills go in one transaction
            submitted = order.move(OrderStatus.SUBMITTED, f"risk approved: sent to the {self.venue.name} venue")
            return self.apply(working, self.venue.submit(request), signal.et, [submitted], signal.reason)
        kind = f"limit {planned.price}" if limit else "market"
        submitted = order.move(OrderStatus.SUBMITTED, f"sent to {self.venue.name} as a {kind} order")
        row = self.order_row(working, signal.reason, signal.et, order.status, planned.price if limit else None)
        self.journal.record(OrderChange(row, [submitted], (), signal.et, working.sent_at))
        self.publish(working, [submitted], signal.et)
        self.working[order_id] = working
        try:
            report = self.venue.submit(request)
        except VenueRejected as error:
            return self.end(working, OrderStatus.REJECTED, f"the exchange refused: {error}", signal.et)
        except VenueUnavailable as error:
            self.venue_unreachable(error)
            self.log.error("live_order_unanswered", order_id=order_id, error=str(error),
                           next_step="looked up by its client id until the exchange answers")
            return
        self.apply(working, report, signal.et)

    # ----- booking what the venue says --------------------------------------------------------------------
    def apply(self, working: WorkingOrder, report: VenueReport | None, event_time: int | None = None,
              steps: list[Transition] | None = None, new_order_reason: str | None = None) -> None:
        """Book what the venue says of an order: its new fills (each its own trade, exactly as reported)
        and its state. An order a remote venue never received is REJECTED once it cannot arrive any more.
        `new_order_reason`: the signal's reason, when this is the first answer on an order not yet journaled
        (its row goes in with the state and average price the answer leaves it in)."""
        event_time = self.event_time if event_time is None else event_time
        order, request, steps = working.order, working.request, steps or []
        if report is None:
            waited = time.time() - working.sent_at
            if working.unanswered and waited > self.venue.lost_after_s:
                self.end(working, OrderStatus.REJECTED, f"the exchange never received it (unknown {waited:.0f} s "
                         "after sending)", event_time)
            return
        if order.status == OrderStatus.SUBMITTED:
            steps.append(order.move(OrderStatus.ACCEPTED, self.accepted_reason(request, report)))
        new = [f for f in report.fills if f.trade_id not in working.booked]
        trades, trace, now = [], f"{working.tid:016x}", time.time()
        for fill in new:
            done = order.filled_qty + fill.qty
            status = OrderStatus.FILLED if done >= order.qty else OrderStatus.PARTIALLY_FILLED
            steps.append(order.move(status, f"{fill.qty} at {fill.price} ({fill.detail or fill.liquidity})",
                                    min(done, order.qty)))
            if fill.note:
                self.log.warning("fee_outside_books", order_id=order.order_id, note=fill.note)
            if working.reserved:
                account = self.portfolio.accounts[request.strategy]
                self.consume(working, outlay(account, fill.qty, fill.price, ZERO, self.portfolio.futures) + fill.fee)
            realized = self.portfolio.apply_fill(request.strategy, request.symbol, request.side, fill.qty, fill.price,
                                                 fill.fee)
            if self.portfolio.futures:
                self.watch(request.strategy, request.symbol)
            working.booked.add(fill.trade_id)
            trades.append(TradeRow(f"{order.order_id}-{fill.trade_id}", order.order_id, request.strategy,
                                   request.symbol, request.side, fill.qty, fill.price, fill.fee, realized, event_time,
                                   trace, now, fill.liquidity))
        ended = None
        if not order.done and not report.open:
            reason = working.cancel_reason or report.reason or (
                f"the exchange ended it {report.status} with {order.filled_qty} of {order.qty} filled")
            ended = order.move(end_state(order, report.status), reason)
            steps.append(ended)
        if not steps:
            return
        if self.journaling:
            self.journal_change(working, steps, trades, event_time, now, new_order_reason, ended)
        self.touched.add((request.strategy, request.symbol))
        for trade in trades:
            self.publish_fill(trade, working.signal_id, working.tid, working.origin_ns)
            working.origin_ns = 0
        self.publish(working, steps, event_time)
        if order.done:
            self.forget(working)
        elif order.order_id not in self.working:
            self.working[order.order_id] = working
        if self.log.enabled("INFO"):
            self.log.info("order_booked", trace_id=working.tid, order_id=order.order_id, strategy=request.strategy,
                          symbol=request.symbol, side=request.side, status=order.status, filled=str(order.filled_qty),
                          of=str(order.qty), fills=[[t.trade_id, str(t.qty), str(t.price), str(t.fee)] for t in trades])

    def journal_change(self, working: WorkingOrder, steps: list[Transition], trades: list[TradeRow], event_time: int,
                       now: float, new_order_reason: str | None, ended: Transition | None) -> None:
        """Commit what `apply` booked in one transaction; if the store refuses, memory must not keep it either."""
        order, request = working.order, working.request
        new_row = None
        if new_order_reason is not None:
            price = average_price(trades) if trades else request.price if request.limit else None
            new_row = self.order_row(working, new_order_reason, event_time, order.status, price)
        try:
            self.journal.record(OrderChange(new_row, steps, trades, event_time, now, order.status,
                                            ended.reason if ended else None))
        except Exception:
            self.portfolio = self.journal.rebuild(self.portfolio)
            for kept in self.working.values():
                self.portfolio.accounts[kept.request.strategy].reserved += kept.reserved
            raise

    @staticmethod
    def order_row(working: WorkingOrder, reason: str, event_time: int, status: str,
                  price: Decimal | None) -> OrderRow:
        """A new order's journal row, in state `status` (a limit's price, or a filled order's average)."""
        r = working.request
        return OrderRow(r.order_id, working.signal_id, r.strategy, r.symbol, r.side, r.qty, price, status, reason,
                        event_time, f"{working.tid:016x}", working.sent_at, "limit" if r.limit else "market",
                        working.expires_et)

    def accepted_reason(self, request: OrderRequest, report: VenueReport) -> str:
        if self.venue.remote:
            return "the exchange took it"
        if request.limit:
            return f"resting: {request.side} limit {request.price}"
        return f"the {self.venue.name} venue takes market orders"

    def end(self, working: WorkingOrder, status: OrderStatus, reason: str, event_time: int) -> None:
        step = working.order.move(status, reason)
        now = time.time()
        self.journal.record(OrderChange(None, [step], (), event_time, now, step.after, reason))
        self.publish(working, [step], event_time)
        self.forget(working)
        self.log.warning("order_ended", order_id=step.order_id, status=status, reason=reason)

    def reject(self, signal: Signal, order_id: str, qty: Decimal, rule: str, reason: str) -> None:
        why = f"{rule}: {reason}"
        step = Order(order_id, qty).move(OrderStatus.REJECTED, why)
        if self.journaling:
            kind, now = self.rules.order_type if signal.side == "buy" else "market", time.time()
            row = OrderRow(order_id, signal.signal_id, signal.strategy, signal.symbol, signal.side, qty, None,
                           OrderStatus.REJECTED, why, signal.et, f"{signal.tid:016x}", now, kind, None)
            self.journal.record(OrderChange(row, [step], (), signal.et, now))
        self.events.order(self.update(step, signal.signal_id, signal.strategy, signal.symbol, signal.side, qty, None,
                                      signal.et, signal.tid))
        if self.log.enabled("INFO"):
            self.log.info("order_rejected", trace_id=signal.tid, order_id=order_id, rule=rule, reason=reason)

    def publish_fill(self, trade: TradeRow, signal_id: str = "", tid: int = 0, origin_ns: int = 0) -> None:
        account = self.portfolio.accounts[trade.strategy]
        position = account.positions.get(trade.symbol)
        self.events.fill(Fill(
            trade_id=trade.trade_id, order_id=trade.order_id, signal_id=signal_id, strategy=trade.strategy,
            symbol=trade.symbol, side=trade.side, qty=trade.qty, price=trade.price, fee=trade.fee,
            realized_pnl=trade.realized_pnl, cash_after=account.cash, position_after=position.qty if position else ZERO,
            liquidity=trade.liquidity, origin_ns=origin_ns, signal_ns=self.signal_ns if origin_ns else 0,
            received_ns=self.received_ns if origin_ns else 0,
            approved_ns=self.approved_ns if origin_ns else 0, et=trade.event_time, tid=tid))
        self.unpublished.append(trade.trade_id)

    def republish(self, trades: list[TradeRow]) -> None:
        """Fills a crash cut off between the commit and the publish go out now (subscribers dedupe by id)."""
        for trade in trades:
            self.publish_fill(trade)
        if trades:
            self.log.warning("fills_republished", count=len(trades))

    def publish(self, working: WorkingOrder, steps: list[Transition], event_time: int) -> None:
        r = working.request
        price = r.price if r.limit else None
        for step in steps:
            self.events.order(self.update(step, working.signal_id, r.strategy, r.symbol, r.side, r.qty, price,
                                          event_time, working.tid))

    @staticmethod
    def update(step: Transition, signal_id: str, strategy: str, symbol: str, side: str, qty: Decimal,
               price: Decimal | None, event_time: int, tid: int) -> OrderUpdate:
        shown = price if step.after in (OrderStatus.FILLED, OrderStatus.ACCEPTED) else None
        return OrderUpdate(order_id=step.order_id, signal_id=signal_id, strategy=strategy, symbol=symbol, side=side,
                           qty=qty, filled_qty=step.filled_qty, status=step.after, reason=step.reason, price=shown,
                           et=event_time, tid=tid)

    # ----- cash held back by resting buys ----------------------------------------------------------------------
    def hold_back(self, working: WorkingOrder) -> None:
        """A resting entry holds back what it will spend: spot buys the notional and fee, futures entries
        (either side) the margin and fee."""
        r, futures = working.request, self.portfolio.futures
        if r.reduce_only or (r.side != "buy" and not futures):
            return
        account = self.portfolio.accounts[r.strategy]
        working.reserved = outlay(account, r.qty - working.order.filled_qty, r.price, self.rules.fees.maker, futures)
        account.reserved += working.reserved

    def consume(self, working: WorkingOrder, spent: Decimal) -> None:
        """A part fill spent some of what the order held back: hold back only the rest."""
        used = min(spent, working.reserved)
        working.reserved -= used
        self.portfolio.accounts[working.request.strategy].reserved -= used

    def forget(self, working: WorkingOrder) -> None:
        self.working.pop(working.order.order_id, None)
        if working.reserved:
            self.portfolio.accounts[working.request.strategy].reserved -= working.reserved
            working.reserved = ZERO

    # ----- working orders: cancels, timeouts, lookups ---------------------------------------------------------
    def cancel(self, working: WorkingOrder, reason: str) -> None:
        """Ask the venue to cancel; whatever filled first is booked. Unanswered, it is asked again."""
        working.cancel_reason = reason
        try:
            self.apply(working, self.venue.cancel(working.request.symbol, working.order.order_id))
        except VenueUnavailable as error:
            self.venue_unreachable(error)
        except VenueRejected as error:
            self.log.warning("cancel_refused", order_id=working.order.order_id, error=str(error))

    def expire(self) -> None:
        """Resting orders past their timeout (market time) are canceled."""
        for working in [w for w in self.working.values()
                        if w.expires_et is not None and w.expires_et <= self.event_time and not w.cancel_reason]:
            self.cancel(working, f"timeout: unfilled after {self.order_timeout_ms / 1000:g} s")

    def check(self) -> None:
        """For a remote venue, every few seconds: resting orders' fills, unanswered orders' fate, pending
        cancels; a venue that stopped answering is pinged until it answers again."""
        if not self.started:
            return self.start()
        try:
            if self.venue_down:
                self.venue.ping()
            for working in list(self.working.values()):
                self.refresh(working)
            if self.portfolio.futures and self.event_time >= self.funding_due:
                self.collect_funding()
                self.funding_due = (self.event_time // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS + FUNDING_BOOKED_MS
        except VenueUnavailable as error:
            return self.venue_unreachable(error)
        if self.venue_down:
            self.log.info("live_venue_back", was=self.venue_down)
            self.venue_down = ""
            self.events.venue_status(VenueStatus(connected=True, reason="the exchange answers again",
                                                 et=self.event_time))

    def refresh(self, working: WorkingOrder) -> None:
        """The order as the venue knows it now, booked (a pending cancel is asked again). Raises
        VenueUnavailable for the caller to note."""
        if working.cancel_reason:
            return self.cancel(working, working.cancel_reason)
        try:
            self.apply(working, self.venue.lookup(working.request.symbol, working.order.order_id))
        except VenueRejected as error:
            self.log.warning("order_check_refused", order_id=working.order.order_id, error=str(error))

    def refresh_orders(self, order_ids: set[str]) -> None:
        """Orders the venue says changed (its user-data stream): looked up at once."""
        if not self.started:
            return
        for order_id in order_ids & set(self.working):
            try:
                self.refresh(self.working[order_id])
            except VenueUnavailable as error:
                return self.venue_unreachable(error)

    def venue_unreachable(self, error: Exception) -> None:
        if not self.venue_down:
            self.venue_down = str(error)
            self.log.error("live_venue_unreachable", error=str(error))
            self.events.venue_status(VenueStatus(connected=False, reason=f"the exchange does not answer: {error}",
                                                 et=self.event_time))

    def remote_refusal(self, signal: Signal) -> str | None:
        """Why no order may be sent to the remote venue for this signal now, or None."""
        if self.blocked:
            return self.blocked
        if self.venue_down:
            return f"the exchange does not answer: {self.venue_down}"
        unanswered = [w.order.order_id for w in self.working.values()
                      if w.unanswered and (w.request.strategy, w.request.symbol) == (signal.strategy, signal.symbol)]
        if unanswered:
            return f"order {unanswered[0]} for {signal.symbol} has no answer from the exchange yet"
        if self.portfolio.futures and signal.side in ("buy", "short"):
            return self.netting_refusal(signal)
        return None

    def netting_refusal(self, signal: Signal) -> str | None:
        """A futures account in one-way mode holds one position per symbol: the exchange would net a
        strategy's entry against another's position the other way (its PnL, margin and funding then
        differ from the books'), so such an entry is refused while the other is open."""
        long = signal.side == "buy"
        for name, account in self.portfolio.accounts.items():
            position = account.positions.get(signal.symbol)
            if name != signal.strategy and position is not None and position.qty and (position.qty > 0) != long:
                return (f"{name} holds a {'long' if position.qty > 0 else 'short'} {signal.symbol} position: "
                        "the exchange's one-way account would net the two")
        return None

    # ----- start-up: restore, settle, reconcile --------------------------------------------------------------
    def restore(self) -> None:
        """Orders working when the process stopped: followed again, with the trades already booked."""
        for saved in self.journal.working_orders():
            row = saved.row
            order = Order(row.order_id, row.qty, OrderStatus(row.status), min(saved.filled, row.qty),
                          seq_base=saved.last_seq)
            limit = row.order_type == "limit"
            request = OrderRequest(row.order_id, row.strategy, row.symbol, row.side, row.qty,
                                   row.price if limit else ZERO, limit)
            working = WorkingOrder(order, request, row.signal_id, int(row.trace_id or "0", 16), row.created_at,
                                   row.expires_et if limit else None, booked=set(saved.booked))
            self.working[row.order_id] = working
            if limit:
                self.hold_back(working)
            self.venue.restore(request, order.filled_qty)
        if self.working:
            self.log.info("live_orders_restored" if self.venue.remote else "resting_orders_restored",
                          count=len(self.working))

    def start(self) -> None:
        """A remote venue: settle every order that was in flight when the executor last stopped, then
        reconcile the books with the exchange. Until this succeeds no order is sent (retried every check)."""
        try:
            for working in list(self.working.values()):
                self.apply(working, self.venue.lookup(working.request.symbol, working.order.order_id))
            if self.portfolio.futures:  # one-way mode: one leverage per symbol for the account (config checks so)
                leverage = max(self.portfolio.leverage.values(), default=Decimal(1))
                for symbol in self.symbols:
                    self.venue.set_leverage(symbol, leverage)
                self.collect_funding()  # what the exchange settled while the executor was away, before comparing
            balances = self.venue.balances() or {}
            positions = self.venue.positions(self.symbols)
            open_orders = self.venue.open_orders(self.symbols)
            unbooked = self.venue.unbooked_fills(self.symbols, self.journal.booked_venue_trade_ids())
        except (VenueRejected, VenueUnavailable) as error:
            blocked = f"exchange unavailable: {error}"
            if blocked != self.blocked:
                self.log.error("live_venue_unavailable", error=str(error))
            self.blocked = blocked
            return
        self.started = True
        held = self.portfolio.held_assets()
        ours = self.journal.known_order_ids({fill.client_id for fill in unbooked})
        if self.portfolio.futures:
            held = {}  # a futures account holds no base asset: its positions are compared instead
        problems, notes = reconcile(self.portfolio.cash(), held, balances, open_orders, set(self.working),
                                    self.tolerance, unbooked, ours)
        if positions is not None:
            problems += reconcile_positions(self.portfolio, positions)
        if problems:  # a human has to look: this is not retried
            self.blocked = "books and exchange disagree: " + "; ".join(problems)
            self.log.error("reconciliation_failed", problems=problems, notes=notes)
        else:
            self.blocked = ""
            self.log.info("reconciled", cash=str(self.portfolio.cash()), positions={k: str(v) for k, v in held.items()},
                          open_orders=len(self.working), notes=notes)

    # ----- operator commands ------------------------------------------------------------------------------------
    def close_all(self, by: str, reason: str, prices: dict[str, Decimal], strategy: str = "") -> ClosedAll:
        """Close every open position (or `strategy`'s) at market now, through the risk guard (which lets a
        close-all pass even when trading is halted) and the usual order path: recorded and published like
        any order."""
        trades_before = self.portfolio.trades()
        for working in [w for w in self.working.values() if not strategy or w.request.strategy == strategy]:
            self.cancel(working, f"close all ({by})")
        held = [(a.strategy, symbol, p.qty) for a in self.portfolio.accounts.values()
                if not strategy or a.strategy == strategy for symbol, p in a.positions.items() if p.qty]
        stamp = time.time_ns()
        for n, (owner, symbol, qty) in enumerate(held):
            price = self.marks.latest(symbol) or prices.get(symbol)
            if price is None:
                continue
            signal = Signal(signal_id=f"close-all:{stamp}:{n}", strategy=owner, symbol=symbol,
                            side="sell" if qty > 0 else "cover",
                            confidence=1.0, reason=f"close all ({by}): {reason or 'operator request'}",
                            price=float(price), et=self.event_time, st=time.time_ns(), src=self.source)
            self.seen.add(signal.signal_id)
            self.execute(signal, close_all=True)
        filled = self.portfolio.trades() - trades_before
        self.log.warning("close_all", by=by, reason=reason, positions=len(held), filled=filled)
        return ClosedAll(positions=len(held), filled=filled, message=f"close all by {by}: {filled} of {len(held)} "
                         "positions closed")


def average_price(trades: list[TradeRow]) -> Decimal:
    """An order's average fill price (to 1e-8), or its one fill's price."""
    if len(trades) == 1:
        return trades[0].price
    filled = sum((t.qty for t in trades), ZERO)
    return (sum((t.qty * t.price for t in trades), ZERO) / filled).quantize(Decimal("1e-8"))
