"""Executor (paper): signal -> sized order -> risk approval -> fill, with per-strategy sub-accounts.

Order of work for each signal, so that a crash at any point neither loses nor duplicates a trade:
1. a signal id already seen is dropped (in memory, and a UNIQUE key in the store across restarts);
2. the risk guard must approve (no answer = rejected);
3. signal, order, trade and position are written in one transaction;
4. only then are the order update and the fill published; a fill whose publish a crash cut off is
   published again at start-up (trades.published is the outbox flag), and subscribers dedupe by trade id.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from decimal import Decimal

import zmq

from meshtrader.domain.allocation import equal_weights
from meshtrader.domain.money import ZERO, cash, fee, instrument, to_decimal
from meshtrader.domain.orders import Order, OrderStatus, Transition
from meshtrader.domain.portfolio import Portfolio, rebalance_transfers
from meshtrader.execution.planning import (
    MAKER,
    TAKER,
    BookWalk,
    MarkHistory,
    PaperRules,
    PlannedOrder,
    Resting,
    RestingOrders,
    approval_request,
    paper_fee,
    plan_order,
    reservation,
    slippage_problem,
    walk_book,
)
from meshtrader.persistence.store import INSERT_ORDER, INSERT_TRADE, UPSERT_STATE
from meshtrader.runtime.config import Settings
from meshtrader.services.base import Service, main
from meshtrader.venues.ccxt_venue import (
    LOST_AFTER_S,
    ExchangeOrder,
    LiveOrder,
    LiveVenue,
    UserStream,
    VenueRejected,
    VenueUnavailable,
    end_state,
    reconcile,
)
from meshtrader.wire.messages import (
    Allocation,
    Approval,
    CloseAll,
    ClosedAll,
    ExecutorRequests,
    Fill,
    OrderBook,
    OrderUpdate,
    RiskReplies,
    Signal,
    Tick,
    VenueStatus,
    book_topic,
    tick_topic,
)

WEIGHTS_KEY = "executor.weights"  # the allocation the sub-accounts were last funded or rebalanced to
UNITS_KEY = "executor.units"  # each sub-account's units, for NAV (performance) across transfers
PERFORMANCE_EVERY_MS = 15 * 60_000  # strategy_performance rows, in event time
BOOK_STALE_S = 5.0  # an order book older than this is not walked (wall clock)
UPSERT_POSITION = ("INSERT INTO positions VALUES (?,?,?,?,?) ON CONFLICT(strategy, symbol) DO UPDATE SET "
                   "qty=excluded.qty, cost=excluded.cost, updated_at=excluded.updated_at")


def record_transitions(db, steps: list[Transition], event_time: int, now: float) -> None:
    db.executemany("INSERT INTO order_events VALUES (?,?,?,?,?,?,?,?)",
                   [(s.order_id, s.seq, s.before, s.after, str(s.filled_qty), s.reason, event_time, now) for s in steps])


def order_id_for(signal_id: str) -> str:
    """Deterministic, exchange-safe client order id (Binance allows 36 chars of [A-Za-z0-9_-])."""
    return "mt" + hashlib.blake2b(signal_id.encode(), digest_size=12).hexdigest()


class Executor(Service):
    hot_path_store = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("executor", settings)
        self.marks = MarkHistory()
        self.unpublished_marked: list[str] = []
        self.touched_positions: set[tuple[str, str]] = set()
        self.last_performance_et = 0
        self.received_ns = self.approved_ns = 0  # the order path's timestamps, carried on the fill

    # ----- start-up: rebuild from the store -----------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        self.publisher("executor.pub")
        self.risk = self.client("risk.rep", RiskReplies)
        self.rules = PaperRules.from_settings(s)
        self.portfolio = Portfolio.rebuild(self.store.ledger(), self.store.trades())
        self.portfolio.restore_units(self.store.get_state(UNITS_KEY))
        self.venue: LiveVenue | None = None
        self.live_orders: dict[str, LiveOrder] = {}
        self.live_started = False
        self.live_blocked = ""  # why live orders are refused (not yet reconciled, books that disagree)
        self.venue_down = ""  # the error while the exchange does not answer
        balances = self.first_balances() if s.mode == "live" else None
        if not self.portfolio.accounts:
            self.fund_accounts(min(s.capital, balances.get("USDT", Decimal(0))) if balances is not None
                               else s.capital)
        self.refresh_positions_table()
        self.resting = RestingOrders()
        self.seen = self.store.seen_signal_ids()
        applied = self.store.get_state(WEIGHTS_KEY)
        self.applied_weights = {k: Decimal(v) for k, v in applied.items()} if applied else None
        self.tick_to_fill = self.metrics.histogram("mesh_tick_to_fill_seconds",
                                                   "tick sent to fill published").labels(self.name)
        self.orders_total = self.metrics.counter("mesh_orders_total", "orders by final status", ("status",))
        if s.mode == "live":
            self.restore_live_orders()
            self.start_live()
            self.loop.every(s.live_check_s, self.check_live_orders)
            self.listen_to_user_stream()
        else:
            self.restore_resting_orders()
        self.duplicates = self.metrics.counter("mesh_duplicate_signals_total", "signals dropped as already seen")
        self.equity_gauge = self.metrics.gauge("mesh_equity", "portfolio equity (quote currency)")
        self.last_prices()
        self.republish_unpublished()
        strategy_pubs = [s.endpoint(f"strategy.{name}.pub") for name in s.strategies]
        self.subscribe([s.endpoint("feed.pub")], [tick_topic(sym) for sym in s.symbols], self.on_tick)
        self.books: dict[str, tuple[OrderBook, float]] = {}  # symbol -> (latest book, monotonic time received)
        self.bookless: set[str] = set()  # symbols already logged as filled without a book
        if s.fill_model == "book":
            self.subscribe([s.endpoint("feed.pub")], [book_topic(sym) for sym in s.symbols], self.on_book)
        self.subscribe(strategy_pubs, [b"sig."], self.on_signal)
        self.subscribe([s.endpoint("allocator.pub")], [b"alloc"], self.on_allocation)
        self.serve("executor.rep", ExecutorRequests, self.on_request)
        self.loop.every(1.0, self.publish_account)
        current = self.hot.get("alloc")
        if current and self.applied_weights is not None:  # a change published while we were down
            self.rebalance({k: Decimal(v) for k, v in current["weights"].items()}, current.get("reason", ""))
        self.loop.every(0.1, self.sync_store)
        self.loop.every(0.25, self.expire_resting_orders)
        self.log.info("books_rebuilt", equity=self.portfolio.equity(), cash=self.portfolio.cash(),
                      trades=self.portfolio.trades(), signals_seen=len(self.seen))

    def first_balances(self) -> dict[str, Decimal] | None:
        """The exchange's balances, to fund a first start with no more than the account holds."""
        try:
            self.venue = LiveVenue(self.settings)
            return self.venue.balances()
        except (VenueRejected, VenueUnavailable) as error:
            self.log.error("live_venue_unavailable", error=str(error))
            return None

    def fund_accounts(self, capital: Decimal) -> None:
        """First start: split the capital into sub-accounts by the current allocation."""
        current = self.hot.get("alloc")
        weights = ({k: Decimal(v) for k, v in current["weights"].items()} if current
                   else equal_weights(self.settings.strategies))
        rows = []
        for strategy, weight in weights.items():
            amount = cash(capital * weight)
            self.portfolio.fund(strategy, amount)
            rows.append((strategy, str(amount), f"initial allocation {weight}", self.event_time, time.time()))
        self.store.insert_many("ledger", ("strategy", "amount", "reason", "event_time", "created_at"), rows)
        self.store.put_state(WEIGHTS_KEY, {k: str(v) for k, v in weights.items()})
        self.store.put_state(UNITS_KEY, self.portfolio.units_state())
        self.log.info("accounts_funded", weights={k: str(v) for k, v in weights.items()})

    def refresh_positions_table(self) -> None:
        """The trades are the truth; the positions table mirrors them within 100 ms, so after a crash it
        may lag by the last few fills. Bring it up to date, and say which rows moved."""
        stored = {(r["strategy"], r["symbol"]): Decimal(r["qty"])
                  for r in self.store.query("SELECT strategy, symbol, qty FROM positions")}
        rebuilt = {(a.strategy, sym): p.qty for a in self.portfolio.accounts.values()
                   for sym, p in a.positions.items()}
        for key in set(stored) | set(rebuilt):
            if stored.get(key, ZERO) != rebuilt.get(key, ZERO):
                self.log.warning("position_mirror_refreshed", strategy=key[0], symbol=key[1],
                                 stored=stored.get(key), from_trades=rebuilt.get(key))
                self.touched_positions.add(key)
        self.sync_store()

    def last_prices(self) -> None:
        """Mark positions at the last stored candle close until the first tick arrives."""
        for symbol in self.settings.symbols:
            candles = self.store.recent_candles(symbol, 1, self.settings.timeframe)
            if candles:
                self.portfolio.mark(symbol, to_decimal(candles[-1].close))
                self.marks.record(symbol, candles[-1].et, self.portfolio.marks[symbol])
                self.event_time = max(self.event_time, candles[-1].et)

    def republish_unpublished(self) -> None:
        rows = self.store.query("SELECT * FROM trades WHERE published = 0 ORDER BY created_at, trade_id")
        for row in rows:
            self.publish_fill_row(row)
        if rows:
            self.log.warning("fills_republished", count=len(rows))

    # ----- market data and allocation -----------------------------------------------------------
    def on_tick(self, topic: bytes, tick: Tick) -> None:
        price = to_decimal(tick.price)
        if self.marks.record(tick.symbol, tick.et, price):
            self.portfolio.mark(tick.symbol, price)
        if tick.et > self.event_time:
            self.event_time = tick.et
        if self.resting.orders and self.settings.mode == "paper":  # live: the exchange fills them
            for resting in self.resting.crossed(tick.symbol, price):
                self.fill_resting(resting.order.order_id, tick)

    def on_book(self, topic: bytes, book: OrderBook) -> None:
        self.books[book.symbol] = (book, time.monotonic())

    def book_walk(self, planned: PlannedOrder) -> BookWalk | None:
        """The book fill model's walk for a market order, or None (fixed slippage) without a fresh book."""
        book, received = self.books.get(planned.symbol, (None, 0.0))
        if book is None or time.monotonic() - received > BOOK_STALE_S:
            if planned.symbol not in self.bookless:
                self.bookless.add(planned.symbol)
                self.log.warning("no_order_book", symbol=planned.symbol, fallback="fixed slippage",
                                 why="no book received" if book is None else f"book older than {BOOK_STALE_S} s")
            return None
        self.bookless.discard(planned.symbol)
        account = self.portfolio.accounts[planned.strategy]
        return walk_book(book.asks if planned.side == "buy" else book.bids, planned.qty, instrument(planned.symbol),
                         account.free_cash if planned.side == "buy" else None, self.rules.taker_fee)

    def on_allocation(self, topic: bytes, allocation: Allocation) -> None:
        self.rebalance(allocation.weights, allocation.reason)

    def rebalance(self, weights: dict[str, Decimal], reason: str) -> None:
        """Move free cash between sub-accounts toward the new weights of total equity. Positions are
        not sold for it; transfers net to zero to the last digit, in one ledger transaction, and the
        weights applied are stored with them so a restart neither repeats nor misses a rebalance."""
        if weights == self.applied_weights:
            return
        unknown = [s for s in weights if s not in self.portfolio.accounts]
        if unknown:
            self.log.warning("allocation_for_unfunded_strategy", strategies=unknown)
        moves = rebalance_transfers(self.portfolio, {s: w for s, w in weights.items() if s not in unknown})
        now, why = time.time(), f"rebalance: {reason}"[:500]
        for strategy, amount in sorted(moves.items(), key=lambda m: m[1]):  # givers first: cash never dips
            self.portfolio.fund(strategy, amount)
        with self.store.transaction() as db:
            db.executemany("INSERT INTO ledger(strategy, amount, reason, event_time, created_at) VALUES (?,?,?,?,?)",
                           [(s, str(amount), why, self.event_time, now)
                            for s, amount in sorted(moves.items(), key=lambda m: m[1])])
            for key, value in ((WEIGHTS_KEY, {k: str(v) for k, v in weights.items()}),
                               (UNITS_KEY, self.portfolio.units_state())):
                db.execute(UPSERT_STATE, (key, json.dumps(value), now))
        self.applied_weights = dict(weights)
        self.log.info("rebalanced", transfers={k: str(v) for k, v in moves.items()})
        self.publish_account()

    # ----- live orders ---------------------------------------------------------------------------------
    def start_live(self) -> None:
        """Connect, settle every order that was in flight when the executor last stopped, then reconcile
        the books with the exchange. Until this succeeds no order is sent (retried every check)."""
        try:
            if self.venue is None:
                self.venue = LiveVenue(self.settings)
            for live in list(self.live_orders.values()):
                self.apply_report(live, self.venue.order(live.symbol, live.order.order_id))
            balances = self.venue.balances()
            open_orders = self.venue.open_orders(self.settings.symbols)
            booked = {r[0].rsplit("-", 1)[-1] for r in self.store.query("SELECT trade_id FROM trades")}
            unbooked = self.venue.unbooked_fills(self.settings.symbols, booked)
        except (VenueRejected, VenueUnavailable) as error:
            blocked = f"exchange unavailable: {error}"
            if blocked != self.live_blocked:
                self.log.error("live_venue_unavailable", error=str(error))
            self.live_blocked = blocked
            return
        self.live_started = True
        held: dict[str, Decimal] = {}
        for account in self.portfolio.accounts.values():
            for symbol, position in account.positions.items():
                asset = symbol.removesuffix("USDT")
                held[asset] = held.get(asset, ZERO) + position.qty
        client_ids = sorted({fill.client_id for fill in unbooked})
        ours = {r[0] for r in self.store.query(
            f"SELECT order_id FROM orders WHERE order_id IN ({','.join('?' * len(client_ids))})", tuple(client_ids))
        } if client_ids else set()
        problems, notes = reconcile(self.portfolio.cash(), held, balances, open_orders, set(self.live_orders),
                                    self.settings.reconcile_tolerance, unbooked, ours)
        if problems:  # a human has to look: this is not retried
            self.live_blocked = "books and exchange disagree: " + "; ".join(problems)
            self.log.error("reconciliation_failed", problems=problems, notes=notes)
        else:
            self.live_blocked = ""
            self.log.info("reconciled", cash=str(self.portfolio.cash()), positions={k: str(v) for k, v in held.items()},
                          open_orders=len(self.live_orders), notes=notes)

    def send_live(self, signal: Signal, order_id: str, planned: PlannedOrder) -> None:
        """An order to the exchange: stored as SUBMITTED before it leaves, then followed by its client id
        until it ends. A refusal ends it REJECTED; no answer leaves it SUBMITTED and looked up again."""
        limit = planned.price if planned.liquidity == MAKER else None
        kind = "market" if limit is None else f"limit {limit}"
        live = LiveOrder(Order(order_id, planned.qty), signal.strategy, signal.symbol, signal.side, signal.signal_id,
                         signal.tid, time.time(), limit)
        submitted = live.order.move(OrderStatus.SUBMITTED, f"sent to {self.settings.exchange} as a {kind} order")
        expires = signal.et + int(self.settings.order_timeout_s * 1000) if limit is not None else None
        with self.store.transaction() as db:
            db.execute(INSERT_ORDER, (order_id, signal.signal_id, signal.strategy, signal.symbol, signal.side,
                                      str(planned.qty), None if limit is None else str(limit), live.order.status,
                                      signal.reason, signal.et, f"{signal.tid:016x}", live.sent_at,
                                      "market" if limit is None else "limit", expires))
            record_transitions(db, [submitted], signal.et, live.sent_at)
        self.publish_live(live, [submitted], signal.et)
        self.live_orders[order_id] = live
        if limit is not None:
            self.resting.add(Resting(live.order, signal.strategy, signal.symbol, signal.side, limit, signal.signal_id,
                                     expires, reservation(planned, self.rules), signal.tid), self.portfolio)
        try:
            report = self.venue.place(signal.symbol, signal.side, planned.qty, order_id, limit)
        except VenueRejected as error:
            return self.end_live(live, OrderStatus.REJECTED, f"the exchange refused: {error}", signal.et)
        except VenueUnavailable as error:
            self.venue_unreachable(error)
            self.log.error("live_order_unanswered", order_id=order_id, error=str(error),
                           next_step="looked up by its client id until the exchange answers")
            return
        self.apply_report(live, report, signal.et)

    def apply_report(self, live: LiveOrder, report: ExchangeOrder | None, event_time: int | None = None) -> None:
        """Book what the exchange says of an order: its new fills (each its own trade, exactly as the
        exchange reported it) and its state; an order it never received is REJECTED once it cannot
        arrive any more (the request's recvWindow has passed)."""
        event_time = self.event_time if event_time is None else event_time
        order = live.order
        if report is None:
            waited = time.time() - live.sent_at
            if live.unanswered and waited > LOST_AFTER_S:
                self.end_live(live, OrderStatus.REJECTED, f"the exchange never received it (unknown {waited:.0f} s "
                              "after sending)", event_time)
            return
        steps = [order.move(OrderStatus.ACCEPTED, "the exchange took it")] if live.unanswered else []
        new = [f for f in report.fills if f.trade_id not in live.booked]
        rows, trace, now = [], f"{live.tid:016x}", time.time()
        liquidity = MAKER if live.limit is not None else TAKER
        for fill in new:
            done = order.filled_qty + fill.qty
            status = OrderStatus.FILLED if done >= order.qty else OrderStatus.PARTIALLY_FILLED
            steps.append(order.move(status, f"{fill.qty} at {fill.price} (exchange trade {fill.trade_id})",
                                    min(done, order.qty)))
            if fill.note:
                self.log.warning("fee_outside_books", order_id=order.order_id, note=fill.note)
            if live.limit is not None and order.order_id in self.resting.orders:
                self.resting.consume(order.order_id, fill.qty * fill.price + fill.fee, self.portfolio)
            realized = self.portfolio.apply_fill(live.strategy, live.symbol, live.side, fill.qty, fill.price, fill.fee)
            live.booked.add(fill.trade_id)
            rows.append((f"{order.order_id}-{fill.trade_id}", order.order_id, live.strategy, live.symbol, live.side,
                         str(fill.qty), str(fill.price), str(fill.fee), str(realized), event_time, trace, now,
                         liquidity))
        ended = None
        if not order.done and not report.open:
            ended = order.move(end_state(order, report.status), live.cancel_reason or f"the exchange ended it "
                               f"{report.status} with {order.filled_qty} of {order.qty} filled")
            steps.append(ended)
        if not steps:
            return
        with self.store.transaction() as db:
            if ended is not None:
                db.execute("UPDATE orders SET status=?, reason=? WHERE order_id=?",
                           (order.status, ended.reason, order.order_id))
            else:
                db.execute("UPDATE orders SET status=? WHERE order_id=?", (order.status, order.order_id))
            db.executemany(INSERT_TRADE, rows)
            record_transitions(db, steps, event_time, now)
        self.touched_positions.add((live.strategy, live.symbol))
        account = self.portfolio.accounts[live.strategy]
        for row in rows:
            self.pub.publish(b"fill", Fill(
                trade_id=row[0], order_id=order.order_id, signal_id=live.signal_id, strategy=live.strategy,
                symbol=live.symbol, side=live.side, qty=Decimal(row[5]), price=Decimal(row[6]), fee=Decimal(row[7]),
                realized_pnl=Decimal(row[8]), cash_after=account.cash, position_after=account.positions[live.symbol].qty,
                liquidity=liquidity, et=event_time, tid=live.tid))
            self.unpublished_marked.append(row[0])
        self.publish_live(live, steps, event_time)
        if order.done:
            self.forget_live(live)
        self.log.info("live_order", order_id=order.order_id, status=order.status, filled=str(order.filled_qty),
                      fills=[f.trade_id for f in new])

    def end_live(self, live: LiveOrder, status: OrderStatus, reason: str, event_time: int) -> None:
        step = live.order.move(status, reason)
        with self.store.transaction() as db:
            db.execute("UPDATE orders SET status=?, reason=? WHERE order_id=?", (step.after, reason, step.order_id))
            record_transitions(db, [step], event_time, time.time())
        self.publish_live(live, [step], event_time)
        self.forget_live(live)
        self.log.warning("live_order_ended", order_id=step.order_id, status=status, reason=reason)

    def publish_live(self, live: LiveOrder, steps: list[Transition], event_time: int) -> None:
        self.publish_transitions(live.signal_id, live.strategy, live.symbol, live.side, event_time, live.tid, steps,
                                 live.order.qty, live.limit)

    def forget_live(self, live: LiveOrder) -> None:
        self.live_orders.pop(live.order.order_id, None)
        if live.order.order_id in self.resting.orders:
            self.resting.release(live.order.order_id, self.portfolio)
        self.orders_total.labels(self.name, live.order.status).inc()

    def cancel_live(self, live: LiveOrder, reason: str) -> None:
        """Ask the exchange to cancel; whatever filled first is booked. Unanswered, it is asked again."""
        live.cancel_reason = reason
        try:
            self.apply_report(live, self.venue.cancel(live.symbol, live.order.order_id))
        except VenueUnavailable as error:
            self.venue_unreachable(error)
        except VenueRejected as error:
            self.log.warning("live_cancel_refused", order_id=live.order.order_id, error=str(error))

    def check_live_orders(self) -> None:
        """Every MESH_LIVE_CHECK_S: resting orders' fills, unanswered orders' fate, pending cancels."""
        if not self.live_started:
            return self.start_live()
        try:
            if self.venue_down:
                self.venue.ping()
            for live in list(self.live_orders.values()):
                self.refresh_live(live)
        except VenueUnavailable as error:
            return self.venue_unreachable(error)
        if self.venue_down:
            self.log.info("live_venue_back", was=self.venue_down)
            self.venue_down = ""
            self.pub.publish(b"venue.status", VenueStatus(connected=True, reason="the exchange answers again",
                                                          et=self.event_time))

    def refresh_live(self, live: LiveOrder) -> None:
        """The order as the exchange knows it now, booked (a pending cancel is asked again). Raises
        VenueUnavailable for the caller to note."""
        if live.cancel_reason:
            return self.cancel_live(live, live.cancel_reason)
        try:
            self.apply_report(live, self.venue.order(live.symbol, live.order.order_id))
        except VenueRejected as error:
            self.log.warning("live_order_check_refused", order_id=live.order.order_id, error=str(error))

    def listen_to_user_stream(self) -> None:
        """Order updates pushed by the exchange: the order is looked up at once instead of at the next check."""
        endpoint = f"inproc://userstream-{id(self)}"
        self.user_inbox = self.ctx.socket(zmq.PULL)
        self.user_inbox.bind(endpoint)
        self.loop.add_reader(self.user_inbox, self.on_user_event)
        self._closables.append(self.user_inbox)
        self.user_stream = UserStream(self.settings, endpoint, self.ctx, self.log)
        self.user_stream.start()

    def on_user_event(self) -> None:
        updated = set()
        while True:
            try:
                updated.add(self.user_inbox.recv(zmq.NOBLOCK).decode())
            except zmq.Again:
                break
        if not self.live_started:
            return
        for order_id in updated & set(self.live_orders):
            try:
                self.refresh_live(self.live_orders[order_id])
            except VenueUnavailable as error:
                return self.venue_unreachable(error)

    def venue_unreachable(self, error: Exception) -> None:
        if not self.venue_down:
            self.venue_down = str(error)
            self.log.error("live_venue_unreachable", error=str(error))
            self.pub.publish(b"venue.status", VenueStatus(connected=False, reason=f"the exchange does not answer: "
                                                          f"{error}", et=self.event_time))

    def live_refusal(self, signal: Signal) -> str | None:
        """Why no live order may be sent for this signal now, or None."""
        if self.live_blocked:
            return self.live_blocked
        if self.venue_down:
            return f"the exchange does not answer: {self.venue_down}"
        unanswered = [o.order.order_id for o in self.live_orders.values()
                      if o.unanswered and (o.strategy, o.symbol) == (signal.strategy, signal.symbol)]
        if unanswered:
            return f"order {unanswered[0]} for {signal.symbol} has no answer from the exchange yet"
        return None

    def restore_live_orders(self) -> None:
        """Orders in flight when the executor stopped: followed again, with the trades already booked."""
        rows = self.store.query("SELECT o.*, (SELECT MAX(seq) FROM order_events e WHERE e.order_id = o.order_id) "
                                "AS last_seq FROM orders o WHERE status IN ('SUBMITTED', 'ACCEPTED', 'PARTIALLY_FILLED')")
        for row in rows:
            order_id = row["order_id"]
            trades = self.store.query("SELECT trade_id, qty FROM trades WHERE order_id = ?", (order_id,))
            booked = {r[0].removeprefix(order_id + "-") for r in trades}
            filled = sum((Decimal(r[1]) for r in trades), ZERO)
            order = Order(order_id, Decimal(row["qty"]), OrderStatus(row["status"]), min(filled, Decimal(row["qty"])),
                          seq_base=row["last_seq"] or 0)
            limit = Decimal(row["price"]) if row["order_type"] == "limit" else None
            live = LiveOrder(order, row["strategy"], row["symbol"], row["side"], row["signal_id"],
                             int(row["trace_id"] or "0", 16), row["created_at"], limit, booked)
            self.live_orders[order_id] = live
            if limit is not None:
                left = PlannedOrder(live.strategy, live.symbol, live.side, order.qty - order.filled_qty, limit, False,
                                    MAKER)
                self.resting.add(Resting(order, live.strategy, live.symbol, live.side, limit, live.signal_id,
                                         row["expires_et"] or 0, reservation(left, self.rules), live.tid),
                                 self.portfolio)
        if rows:
            self.log.info("live_orders_restored", count=len(rows))

    # ----- operator commands -----------------------------------------------------------------------
    def on_request(self, request: CloseAll) -> ClosedAll:
        return self.close_all(request.by, request.reason)

    def close_all(self, by: str, reason: str) -> ClosedAll:
        """Sell every open position at market now, through the risk guard (which lets a close-all pass
        even when trading is halted) and the usual order path: recorded and published like any order."""
        trades_before = self.portfolio.trades()
        for resting in list(self.resting.orders.values()):
            self.cancel_resting(resting.order.order_id, f"close all ({by})")
        held = [(a.strategy, symbol, p.qty) for a in self.portfolio.accounts.values()
                for symbol, p in a.positions.items() if p.qty > 0]
        stamp = time.time_ns()
        for n, (strategy, symbol, _) in enumerate(held):
            price = self.marks.latest(symbol) or self.portfolio.marks.get(symbol)
            if price is None:
                continue
            signal = Signal(signal_id=f"close-all:{stamp}:{n}", strategy=strategy, symbol=symbol, side="sell",
                            confidence=1.0, reason=f"close all ({by}): {reason or 'operator request'}",
                            price=float(price), et=self.event_time, st=time.monotonic_ns(), src=self.name)
            self.seen.add(signal.signal_id)
            self.execute(signal, close_all=True)
        filled = self.portfolio.trades() - trades_before
        message = f"close all by {by}: {filled} of {len(held)} positions sold"
        self.store.agent_event(self.name, "close_all", {"by": by, "reason": reason, "positions": len(held),
                                                        "filled": filled})
        self.log.warning("close_all", by=by, reason=reason, positions=len(held), filled=filled)
        return ClosedAll(positions=len(held), filled=filled, message=message)

    # ----- the order path -----------------------------------------------------------------------
    def on_signal(self, topic: bytes, signal: Signal) -> None:
        self.received_ns = time.monotonic_ns()
        if signal.signal_id in self.seen:
            self.duplicates.labels(self.name).inc()
            return
        self.seen.add(signal.signal_id)
        if signal.et > self.event_time:
            self.event_time = signal.et
        account = self.portfolio.accounts.get(signal.strategy)
        if account is None:
            return self.record_outcome(signal, f"no sub-account for strategy {signal.strategy!r}")
        waited_s = (time.monotonic_ns() - signal.st) / 1e9
        if waited_s > self.settings.signal_ttl_s:
            return self.record_outcome(signal, f"stale: waited {waited_s:.1f}s")
        price = to_decimal(signal.price)
        if self.marks.record(signal.symbol, signal.et, price):
            self.portfolio.mark(signal.symbol, price)
        latest, self.portfolio.marks = self.portfolio.marks, self.marks.as_of(signal.et, signal.symbol, price)
        try:
            self.execute(signal)
        finally:
            self.portfolio.marks = latest

    def execute(self, signal: Signal, close_all: bool = False) -> None:
        """Plan, approve and fill at the marks as of the signal's event time (a limit order rests instead)."""
        if signal.side == "sell":  # an exit first withdraws the strategy's resting entries in that symbol
            for resting in self.resting.of(signal.strategy, signal.symbol):
                self.cancel_resting(resting.order.order_id, f"canceled by the exit signal {signal.signal_id}")
        planned = plan_order(self.portfolio, signal.strategy, signal.symbol, signal.side, self.rules, signal.bar_volume)
        if isinstance(planned, str):
            return self.record_outcome(signal, planned)
        order_id = order_id_for(signal.signal_id)
        walk = None
        if self.rules.fill_model == "book" and planned.liquidity == TAKER and self.settings.mode == "paper":
            walk = self.book_walk(planned)
            if walk is not None:
                planned = replace(planned, slippage_bp=walk.slippage_bp(planned.side, self.portfolio.marks[planned.symbol]))
        if (problem := slippage_problem(planned, self.rules)) is not None:
            return self.reject(signal, order_id, planned.qty, "slippage_tolerance", problem)
        if self.settings.mode == "live" and (refusal := self.live_refusal(signal)) is not None:
            return self.reject(signal, order_id, planned.qty, "live_blocked", refusal)
        reply = self.risk.request(approval_request(self.portfolio, planned, order_id, signal.et, signal.stop,
                                                   close_all, src=self.name, tid=signal.tid))
        if not isinstance(reply, Approval):
            reason = (f"risk guard unavailable: no answer in {self.settings.risk_retries} x "
                      f"{self.settings.risk_timeout_ms} ms" if reply is None else f"risk guard error: {reply.error}")
            return self.reject(signal, order_id, planned.qty, "risk_unavailable", reason)
        if not reply.approved:
            return self.reject(signal, order_id, planned.qty, reply.rule, reply.reason)
        self.approved_ns = time.monotonic_ns()
        if self.settings.mode == "live":
            return self.send_live(signal, order_id, planned)
        if planned.liquidity == MAKER:
            return self.place(signal, order_id, planned)
        self.fill(signal, order_id, planned, walk)

    def fill(self, signal: Signal, order_id: str, planned: PlannedOrder, walk: BookWalk | None = None) -> None:
        """A paper market order: one fill at the planned price, or (book fill model) one per level of
        the order book it walked, the rest of the order EXPIRED if the book did not hold it."""
        levels = walk.fills if walk is not None else [(planned.qty, planned.price)]
        order = Order(order_id, planned.qty)
        steps = [order.move(OrderStatus.SUBMITTED, "risk approved: sent to the paper venue"),
                 order.move(OrderStatus.ACCEPTED, "the paper venue takes market orders")]
        trades, trace = [], f"{signal.tid:016x}"
        for n, (qty, price) in enumerate(levels, 1):
            paid = fee(qty * price, self.rules.fee_rate(planned.liquidity))
            done = order.filled_qty + qty
            status = OrderStatus.FILLED if done == order.qty else OrderStatus.PARTIALLY_FILLED
            where = f"book level {n}" if walk is not None else planned.liquidity
            steps.append(order.move(status, f"{qty} at {price} ({where})", done))
            realized = self.portfolio.apply_fill(signal.strategy, signal.symbol, signal.side, qty, price, paid)
            trades.append((f"{order_id}-{n}", qty, price, paid, realized))
        if not order.done:
            steps.append(order.move(OrderStatus.EXPIRED, f"the order book held {order.filled_qty} of {order.qty} "
                                    f"within its {walk.levels} levels: the rest expired"))
        now = time.time()
        try:
            self.write_fill(signal, order, trades, planned.liquidity, trace, now, steps)
        except Exception:
            self.reload_books()  # the store refused the fill: memory must not keep it either
            raise
        account = self.portfolio.accounts[signal.strategy]
        for trade_id, qty, price, paid, realized in trades:
            self.pub.publish(b"fill", Fill(trade_id=trade_id, order_id=order_id, signal_id=signal.signal_id,
                                           strategy=signal.strategy, symbol=signal.symbol, side=signal.side, qty=qty,
                                           price=price, fee=paid, realized_pnl=realized, cash_after=account.cash,
                                           position_after=account.positions[signal.symbol].qty,
                                           liquidity=planned.liquidity, received_ns=self.received_ns,
                                           approved_ns=self.approved_ns, origin_ns=signal.origin_ns, et=signal.et,
                                           tid=signal.tid))
            self.unpublished_marked.append(trade_id)
        if signal.origin_ns and trades:
            self.tick_to_fill.observe((time.monotonic_ns() - signal.origin_ns) / 1e9)
        self.publish_transitions(signal.signal_id, signal.strategy, signal.symbol, signal.side, signal.et, signal.tid,
                                 steps, order.qty, levels[-1][1] if levels else None)
        self.orders_total.labels(self.name, order.status).inc()
        self.log.info("filled", trace_id=signal.tid, order_id=order_id, strategy=signal.strategy, symbol=signal.symbol,
                      side=signal.side, qty=str(order.filled_qty), of=str(order.qty),
                      fills=[[str(q), str(p), str(f)] for _, q, p, f, _ in trades], status=order.status)

    # ----- resting (limit) orders in the paper venue ------------------------------------------------
    def place(self, signal: Signal, order_id: str, planned: PlannedOrder) -> None:
        """A limit order accepted by the paper venue: it rests, holding back its cash, until the market
        trades through its price or it times out."""
        order = Order(order_id, planned.qty)
        steps = [order.move(OrderStatus.SUBMITTED, "risk approved: sent to the paper venue"),
                 order.move(OrderStatus.ACCEPTED, f"resting: buy limit {planned.price}")]
        expires = signal.et + int(self.settings.order_timeout_s * 1000)
        now = time.time()
        with self.store.transaction() as db:
            db.execute(INSERT_ORDER, (order_id, signal.signal_id, signal.strategy, signal.symbol, signal.side,
                                      str(planned.qty), str(planned.price), order.status, signal.reason, signal.et,
                                      f"{signal.tid:016x}", now, "limit", expires))
            record_transitions(db, steps, signal.et, now)
        self.resting.add(Resting(order, signal.strategy, signal.symbol, signal.side, planned.price, signal.signal_id,
                                 expires, reservation(planned, self.rules), signal.tid), self.portfolio)
        self.publish_transitions(signal.signal_id, signal.strategy, signal.symbol, signal.side, signal.et,
                                 signal.tid, steps, planned.qty, planned.price)
        self.log.info("order_resting", order_id=order_id, strategy=signal.strategy, symbol=signal.symbol,
                      qty=str(planned.qty), price=str(planned.price), expires_et=expires)

    def fill_resting(self, order_id: str, tick: Tick) -> None:
        """The market traded through the limit: the whole order fills at its price, as a maker."""
        resting = self.resting.release(order_id, self.portfolio)
        order, qty, price = resting.order, resting.order.qty, resting.price
        planned = PlannedOrder(resting.strategy, resting.symbol, resting.side, qty, price, False, MAKER)
        paid = paper_fee(planned, self.rules)
        step = order.move(OrderStatus.FILLED, f"the market traded through {price} at {tick.price}", qty)
        realized = self.portfolio.apply_fill(resting.strategy, resting.symbol, resting.side, qty, price, paid)
        trade_id, now = order_id + "-1", time.time()
        try:
            with self.store.transaction() as db:
                db.execute("UPDATE orders SET status=? WHERE order_id=?", (order.status, order_id))
                db.execute(INSERT_TRADE, (trade_id, order_id, resting.strategy, resting.symbol, resting.side, str(qty),
                                          str(price), str(paid), str(realized), tick.et, f"{resting.tid:016x}", now,
                                          MAKER))
                record_transitions(db, [step], tick.et, now)
        except Exception:
            self.reload_books()
            raise
        self.touched_positions.add((resting.strategy, resting.symbol))
        account = self.portfolio.accounts[resting.strategy]
        self.pub.publish(b"fill", Fill(trade_id=trade_id, order_id=order_id, signal_id=resting.signal_id,
                                       strategy=resting.strategy, symbol=resting.symbol, side=resting.side, qty=qty,
                                       price=price, fee=paid, realized_pnl=realized, cash_after=account.cash,
                                       position_after=account.positions[resting.symbol].qty, liquidity=MAKER,
                                       et=tick.et, tid=resting.tid))
        self.unpublished_marked.append(trade_id)
        self.publish_transitions(resting.signal_id, resting.strategy, resting.symbol, resting.side, tick.et,
                                 resting.tid, [step], qty, price)
        self.orders_total.labels(self.name, "FILLED").inc()
        self.log.info("filled", trace_id=resting.tid, order_id=order_id, strategy=resting.strategy,
                      symbol=resting.symbol, side=resting.side, qty=str(qty), price=str(price), fee=str(paid),
                      liquidity=MAKER)

    def cancel_resting(self, order_id: str, reason: str) -> None:
        if order_id in self.live_orders:
            return self.cancel_live(self.live_orders[order_id], reason)
        resting = self.resting.release(order_id, self.portfolio)
        step = resting.order.move(OrderStatus.CANCELED, reason)
        now = time.time()
        with self.store.transaction() as db:
            db.execute("UPDATE orders SET status=?, reason=? WHERE order_id=?", (step.after, reason, order_id))
            record_transitions(db, [step], self.event_time, now)
        self.publish_transitions(resting.signal_id, resting.strategy, resting.symbol, resting.side, self.event_time,
                                 resting.tid, [step], resting.order.qty, None)
        self.orders_total.labels(self.name, "CANCELED").inc()
        self.log.info("order_canceled", order_id=order_id, reason=reason)

    def expire_resting_orders(self) -> None:
        for resting in self.resting.expired(self.event_time):
            if (live := self.live_orders.get(resting.order.order_id)) is not None and live.cancel_reason:
                continue  # its cancel is on its way
            self.cancel_resting(resting.order.order_id,
                                f"timeout: unfilled after {self.settings.order_timeout_s:g} s")

    def restore_resting_orders(self) -> None:
        """After a restart the paper venue holds exactly the orders it held: from the store."""
        rows = self.store.query("SELECT o.*, (SELECT MAX(seq) FROM order_events e WHERE e.order_id = o.order_id) "
                                "AS last_seq FROM orders o WHERE status IN ('ACCEPTED', 'PARTIALLY_FILLED')")
        for row in rows:
            order = Order(row["order_id"], Decimal(row["qty"]), OrderStatus(row["status"]), seq_base=row["last_seq"] or 0)
            planned = PlannedOrder(row["strategy"], row["symbol"], row["side"], order.qty, Decimal(row["price"]), False,
                                   MAKER)
            self.resting.add(Resting(order, row["strategy"], row["symbol"], row["side"], planned.price,
                                     row["signal_id"], row["expires_et"] or 0, reservation(planned, self.rules),
                                     int(row["trace_id"] or "0", 16)), self.portfolio)
        if rows:
            self.log.info("resting_orders_restored", count=len(rows))

    def write_fill(self, signal: Signal, order: Order, trades: list[tuple], liquidity: str, trace: str, now: float,
                   steps: list[Transition]) -> None:
        """The order, its transitions and its trades, atomically: the only writes on the order path."""
        average = (sum((q * p for _, q, p, _, _ in trades), ZERO) / order.filled_qty).quantize(Decimal("1e-8")) \
            if len(trades) > 1 else trades[0][2] if trades else None
        with self.store.transaction() as db:
            db.execute(INSERT_ORDER, (order.order_id, signal.signal_id, signal.strategy, signal.symbol, signal.side,
                                      str(order.qty), None if average is None else str(average), order.status,
                                      signal.reason, signal.et, trace, now, "market", None))
            record_transitions(db, steps, signal.et, now)
            db.executemany(INSERT_TRADE, [(trade_id, order.order_id, signal.strategy, signal.symbol, signal.side,
                                           str(qty), str(price), str(paid), str(realized), signal.et, trace, now,
                                           liquidity) for trade_id, qty, price, paid, realized in trades])
        self.touched_positions.add((signal.strategy, signal.symbol))

    def reload_books(self) -> None:
        marks, self.portfolio = self.portfolio.marks, Portfolio.rebuild(self.store.ledger(), self.store.trades())
        self.portfolio.marks.update(marks)

    def reject(self, signal: Signal, order_id: str, qty: Decimal, rule: str, reason: str) -> None:
        now = time.time()
        steps = [Order(order_id, qty).move(OrderStatus.REJECTED, f"{rule}: {reason}")]
        with self.store.transaction() as db:
            db.execute(INSERT_ORDER, (order_id, signal.signal_id, signal.strategy, signal.symbol, signal.side, str(qty),
                                      None, "REJECTED", f"{rule}: {reason}", signal.et, f"{signal.tid:016x}", now,
                                      self.rules.order_type if signal.side == "buy" else "market", None))
            record_transitions(db, steps, signal.et, now)
        self.publish_transitions(signal.signal_id, signal.strategy, signal.symbol, signal.side, signal.et, signal.tid,
                                 steps, qty, None)
        self.orders_total.labels(self.name, "REJECTED").inc()
        self.log.info("order_rejected", trace_id=signal.tid, order_id=order_id, rule=rule, reason=reason)

    def publish_transitions(self, signal_id: str, strategy: str, symbol: str, side: str, event_time: int, tid: int,
                            steps: list[Transition], qty: Decimal, price: Decimal | None) -> None:
        for step in steps:
            self.pub.publish(b"order", OrderUpdate(
                order_id=step.order_id, signal_id=signal_id, strategy=strategy, symbol=symbol, side=side, qty=qty,
                filled_qty=step.filled_qty, status=step.after, reason=step.reason,
                price=price if step.after in (OrderStatus.FILLED, OrderStatus.ACCEPTED) else None, et=event_time,
                tid=tid))

    def record_outcome(self, signal: Signal, outcome: str) -> None:
        """A signal that makes no order is still recorded, so a restart will not act on it.
        (A signal that makes an order is recorded by the order's UNIQUE signal_id.)"""
        self.store.execute("INSERT INTO signals VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (signal.signal_id, signal.strategy, signal.symbol, signal.side, signal.confidence,
                            signal.reason, repr(signal.price), signal.et, f"{signal.tid:016x}", outcome, time.time()))

    def position_row(self, strategy: str, symbol: str) -> tuple:
        position = self.portfolio.accounts[strategy].positions.get(symbol)
        qty, cost = (position.qty, position.cost) if position else (ZERO, ZERO)
        return strategy, symbol, str(qty), str(cost), time.time()

    # ----- publishing state ---------------------------------------------------------------------
    def publish_fill_row(self, row) -> None:
        account = self.portfolio.accounts[row["strategy"]]
        position = account.positions.get(row["symbol"])
        self.pub.publish(b"fill", Fill(
            trade_id=row["trade_id"], order_id=row["order_id"], signal_id="", strategy=row["strategy"],
            symbol=row["symbol"], side=row["side"], qty=Decimal(row["qty"]), price=Decimal(row["price"]),
            fee=Decimal(row["fee"]), realized_pnl=Decimal(row["realized_pnl"]), cash_after=account.cash,
            position_after=position.qty if position else ZERO, liquidity=row["liquidity"], et=row["event_time"] or 0))
        self.unpublished_marked.append(row["trade_id"])

    def sync_store(self) -> None:
        """Off the order path, every 100 ms: mark fills as published (the outbox) and mirror positions.
        Trades are the truth; a crash loses neither (start-up republishes and rebuilds from them)."""
        if not self.unpublished_marked and not self.touched_positions:
            return
        ids, self.unpublished_marked = self.unpublished_marked, []
        touched, self.touched_positions = self.touched_positions, set()
        with self.store.transaction() as db:
            db.executemany("UPDATE trades SET published = 1 WHERE trade_id = ?", [(i,) for i in ids])
            db.executemany(UPSERT_POSITION, [self.position_row(*key) for key in touched])

    def publish_account(self) -> None:
        snapshot = self.portfolio.snapshot()
        snapshot.et = self.event_time
        self.pub.publish(b"acct", snapshot)
        self.equity_gauge.labels(self.name).set(float(snapshot.equity))
        self.hot.put("account", {"equity": str(snapshot.equity), "cash": str(snapshot.cash),
                                 "exposure": str(snapshot.exposure), "trades": snapshot.trades,
                                 "event_time": self.event_time,
                                 "accounts": [{"strategy": a.strategy, "cash": str(a.cash), "equity": str(a.equity),
                                               "positions": [{"symbol": p.symbol, "qty": str(p.qty),
                                                              "avg_price": str(p.avg_price),
                                                              "last_price": str(p.last_price)} for p in a.positions]}
                                              for a in snapshot.accounts]})
        if self.event_time - self.last_performance_et >= PERFORMANCE_EVERY_MS:
            self.last_performance_et = self.event_time
            now = time.time()
            self.store.insert_many("strategy_performance",
                                   ("strategy", "event_time", "equity", "cash", "exposure", "trades", "created_at"),
                                   [(a.strategy, self.event_time, str(a.equity), str(a.cash),
                                     str(self.portfolio.exposure(a.strategy)),
                                     self.portfolio.accounts[a.strategy].trades, now) for a in snapshot.accounts])

    def teardown(self) -> None:
        if getattr(self, "user_stream", None) is not None:
            self.user_stream.stop()
        self.sync_store()


if __name__ == "__main__":
    main(Executor)
