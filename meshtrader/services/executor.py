"""Executor: the process around the execution engine (meshtrader.execution.engine). It wires the bus to
the engine (signals, ticks and books in; fills, order updates and account snapshots out), asks the
risk guard over REQ/REP, keeps the sub-accounts funded by the allocation, and chooses the venue:
paper (the matching engine, the default) or an exchange through ccxt (MESH_MODE=live)."""
from __future__ import annotations

from decimal import Decimal

import zmq

from meshtrader.domain.allocation import equal_weights
from meshtrader.domain.money import ZERO, to_decimal
from meshtrader.domain.portfolio import Portfolio
from meshtrader.execution.engine import ExecutionEngine
from meshtrader.execution.planning import OrderRules
from meshtrader.execution.treasury import Treasury
from meshtrader.execution.venue import Venue, VenueRejected, VenueUnavailable
from meshtrader.persistence.ledger import Ledger
from meshtrader.persistence.orders import OrderJournal
from meshtrader.runtime.config import Settings
from meshtrader.services.base import Service, main
from meshtrader.venues.ccxt_venue import CcxtVenue, UserStream
from meshtrader.venues.paper import PaperVenue
from meshtrader.wire.messages import (
    Allocation,
    Approval,
    ApproveOrder,
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

PERFORMANCE_EVERY_MS = 15 * 60_000  # strategy_performance rows, in event time
ENDED = {"FILLED", "CANCELED", "REJECTED", "EXPIRED"}


class Executor(Service):
    hot_path_store = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("executor", settings)
        self.last_performance_et = 0

    def setup(self) -> None:
        s = self.settings
        self.publisher("executor.pub")
        self.risk = self.client("risk.rep", RiskReplies)
        self.journal, self.treasury = OrderJournal(self.store), Treasury(Ledger(self.store), self.log)
        portfolio = Portfolio.rebuild(self.store.ledger(), self.store.trades())
        portfolio.restore_units(self.treasury.ledger.units())
        venue: Venue = CcxtVenue(s) if s.mode == "live" else PaperVenue(OrderRules.from_settings(s).fees,
                                                                         s.fill_model, self.log)
        self.engine = ExecutionEngine(portfolio, venue, OrderRules.from_settings(s), self.approve, self.journal,
                                      self, self.log, order_timeout_s=s.order_timeout_s, signal_ttl_s=s.signal_ttl_s,
                                      tolerance=s.reconcile_tolerance, symbols=s.symbols)
        if not portfolio.accounts:
            self.fund_accounts(venue)
        self.engine.seen = self.journal.seen_signal_ids()
        self.engine.restore()
        self.tick_to_fill = self.metrics.histogram("mesh_tick_to_fill_seconds",
                                                   "tick sent to fill published").labels(self.name)
        self.orders_total = self.metrics.counter("mesh_orders_total", "orders by final status", ("status",))
        self.equity_gauge = self.metrics.gauge("mesh_equity", "portfolio equity (quote currency)")
        self.refresh_positions_table()
        self.last_prices()
        self.engine.republish(self.journal.unpublished_trades())
        self.subscribe([s.endpoint("feed.pub")], [tick_topic(sym) for sym in s.symbols], self.on_tick)
        if s.fill_model == "book":
            self.subscribe([s.endpoint("feed.pub")], [book_topic(sym) for sym in s.symbols], self.on_book)
        self.subscribe([s.endpoint(f"strategy.{name}.pub") for name in s.strategies], [b"sig."], self.on_signal)
        self.subscribe([s.endpoint("allocator.pub")], [b"alloc"], self.on_allocation)
        self.serve("executor.rep", ExecutorRequests, self.on_request)
        if venue.remote:
            self.engine.start()
            self.loop.every(s.live_check_s, self.engine.check)
            self.listen_to_user_stream()
        self.loop.every(1.0, self.publish_account)
        current = self.hot.get("alloc")
        if current and self.treasury.applied is not None:  # a change published while we were down
            self.on_allocation(b"alloc", Allocation(weights={k: Decimal(v) for k, v in current["weights"].items()},
                                                    reason=current.get("reason", "")))
        self.loop.every(0.1, self.sync_store)
        self.loop.every(0.25, self.engine.expire)
        self.log.info("books_rebuilt", equity=portfolio.equity(), cash=portfolio.cash(), trades=portfolio.trades(),
                      signals_seen=len(self.engine.seen), venue=venue.name)

    def fund_accounts(self, venue: Venue) -> None:
        """First start: the capital, or no more than the exchange account holds, split by the allocation."""
        capital = self.settings.capital
        if venue.remote:
            try:
                capital = min(capital, (venue.balances() or {}).get("USDT", ZERO))
            except (VenueRejected, VenueUnavailable) as error:
                self.log.error("live_venue_unavailable", error=str(error))
        current = self.hot.get("alloc")
        weights = ({k: Decimal(v) for k, v in current["weights"].items()} if current
                   else equal_weights(self.settings.strategies))
        self.treasury.fund(self.engine.portfolio, capital, weights, self.event_time)

    def refresh_positions_table(self) -> None:
        for (strategy, symbol), stored, rebuilt in self.journal.stale_positions(self.engine.portfolio):
            self.log.warning("position_mirror_refreshed", strategy=strategy, symbol=symbol, stored=stored,
                             from_trades=rebuilt)
            self.engine.touched.add((strategy, symbol))
        self.sync_store()

    def last_prices(self) -> None:
        """Mark positions at the last stored candle close until the first tick arrives."""
        for symbol in self.settings.symbols:
            candles = self.store.recent_candles(symbol, 1, self.settings.timeframe)
            if candles:
                self.engine.on_tick(symbol, candles[-1].et, to_decimal(candles[-1].close))
        self.event_time = self.engine.event_time

    # ----- the bus in ------------------------------------------------------------------------------------
    def on_tick(self, topic: bytes, tick: Tick) -> None:
        self.engine.on_tick(tick.symbol, tick.et, to_decimal(tick.price))
        self.event_time = self.engine.event_time

    def on_book(self, topic: bytes, book: OrderBook) -> None:
        self.engine.on_book(book)

    def on_signal(self, topic: bytes, signal: Signal) -> None:
        self.engine.on_signal(signal)
        self.event_time = self.engine.event_time

    def on_allocation(self, topic: bytes, allocation: Allocation) -> None:
        if self.treasury.rebalance(self.engine.portfolio, allocation.weights, allocation.reason, self.event_time):
            self.publish_account()

    def on_request(self, request: CloseAll) -> ClosedAll:
        closed = self.engine.close_all(request.by, request.reason, self.engine.portfolio.marks)
        self.store.agent_event(self.name, "close_all", {"by": request.by, "reason": request.reason,
                                                        "positions": closed.positions, "filled": closed.filled})
        return closed

    def approve(self, request: ApproveOrder) -> Approval | str:
        reply = self.risk.request(request)
        if isinstance(reply, Approval):
            return reply
        if reply is None:
            return (f"risk guard unavailable: no answer in {self.settings.risk_retries} x "
                    f"{self.settings.risk_timeout_ms} ms")
        return f"risk guard error: {reply.error}"

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
        self.engine.refresh_orders(updated)

    # ----- the engine's events out (ExecutionEvents) ----------------------------------------------------------
    def fill(self, fill: Fill) -> None:
        self.pub.publish(b"fill", fill)
        if fill.origin_ns:
            self.tick_to_fill.observe((fill.st - fill.origin_ns) / 1e9)

    def order(self, update: OrderUpdate) -> None:
        self.pub.publish(b"order", update)
        if update.status in ENDED:
            self.orders_total.labels(self.name, update.status).inc()

    def venue_status(self, status: VenueStatus) -> None:
        self.pub.publish(b"venue.status", status)

    # ----- state out, off the order path --------------------------------------------------------------------
    def sync_store(self) -> None:
        """Every 100 ms: mark fills as published (the outbox) and mirror positions. Trades are the truth;
        a crash loses neither (start-up republishes and rebuilds from them)."""
        engine = self.engine
        if not engine.unpublished and not engine.touched:
            return
        ids, engine.unpublished = engine.unpublished, []
        touched, engine.touched = engine.touched, set()
        positions = []
        for strategy, symbol in touched:
            position = engine.portfolio.accounts[strategy].positions.get(symbol)
            positions.append((strategy, symbol, position.qty if position else ZERO, position.cost if position else ZERO))
        self.journal.sync(ids, positions)

    def publish_account(self) -> None:
        portfolio = self.engine.portfolio
        snapshot = portfolio.snapshot()
        snapshot.et = self.event_time
        self.pub.publish(b"acct", snapshot)
        self.equity_gauge.labels(self.name).set(float(snapshot.equity))
        self.hot.put_account(snapshot, self.event_time)
        if self.event_time - self.last_performance_et >= PERFORMANCE_EVERY_MS:
            self.last_performance_et = self.event_time
            self.treasury.ledger.performance(self.event_time, [
                (a.strategy, a.equity, a.cash, portfolio.exposure(a.strategy), portfolio.accounts[a.strategy].trades)
                for a in snapshot.accounts])

    def teardown(self) -> None:
        if getattr(self, "user_stream", None) is not None:
            self.user_stream.stop()
        self.sync_store()


if __name__ == "__main__":
    main(Executor)
