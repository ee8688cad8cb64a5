"""Executor: the process around the execution engine (meshtrader.execution.engine). It wires the bus to
the engine (signals, ticks and books in; the engine's bus ports ask the risk guard over REQ/REP and
publish fills and order updates), publishes account snapshots, keeps the sub-accounts funded by the
allocation, and chooses the venue: paper (the matching engine, the default) or an exchange through
ccxt (MESH_MODE=live)."""
from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from meshtrader.domain.allocation import CASH, equal_weights
from meshtrader.domain.candles import timeframe_ms
from meshtrader.domain.futures import install_brackets
from meshtrader.domain.instruments import install_instruments
from meshtrader.domain.money import BP, to_decimal
from meshtrader.domain.portfolio import Portfolio
from meshtrader.execution.bus_ports import BusEvents, RiskGuardApprover
from meshtrader.execution.engine import ExecutionEngine
from meshtrader.execution.planning import OrderRules
from meshtrader.execution.treasury import Treasury
from meshtrader.execution.venue import Venue, VenueRejected, VenueUnavailable
from meshtrader.persistence.ledger import Ledger
from meshtrader.persistence.orders import OrderJournal
from meshtrader.runtime.config import Settings
from meshtrader.services.base import Service, main
from meshtrader.venues.ccxt_venue import CcxtVenue, UserStream
from meshtrader.venues.instruments import load_instruments
from meshtrader.venues.paper import PaperVenue
from meshtrader.wire.messages import (
    AccountSnapshot,
    Allocation,
    CloseAll,
    ClosedAll,
    ExecutorRequests,
    FundingRate,
    MarginClose,
    OrderBook,
    RiskReplies,
    Signal,
    Tick,
    book_topic,
    funding_topic,
    tick_topic,
)

FUNDING_CHECK_S = 5.0  # how often a paper futures executor looks for recorded settlements the bus did not bring


class Executor(Service):
    hot_path_store = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("executor", settings)
        install_instruments(load_instruments(settings, self.log, self.metrics))  # the venue's tick, step, minimums
        self.user_stream: UserStream | None = None

    def setup(self) -> None:
        s = self.settings
        self.publisher("executor.pub")
        self.journal, self.treasury = OrderJournal(self.store), Treasury(Ledger(self.store), self.log)
        portfolio = Portfolio.rebuild(self.store.ledger(), self.store.trades(), market=s.market,
                                      leverage={name: s.leverage_of(name) for name in s.strategies},
                                      liquidation_fee_rate=s.liquidation_fee_bp * BP)
        portfolio.restore_units(self.treasury.ledger.units())
        rules = OrderRules.from_settings(s)
        venue: Venue = (CcxtVenue(s, self.metrics) if s.mode == "live"
                        else PaperVenue(rules.fees, s.fill_model, self.log))
        if s.mode == "live" and s.market == "usdm":
            self.use_exchange_brackets(venue)
        approver = RiskGuardApprover(self.client("risk.rep", RiskReplies))
        events = BusEvents(self.pub, self.metrics, self.publish_account)
        self.engine = ExecutionEngine(portfolio, venue, rules, approver, self.journal, events, self.log,
                                      order_timeout_s=s.order_timeout_s, signal_ttl_s=s.signal_ttl_s,
                                      tolerance=s.reconcile_tolerance, symbols=s.symbols,
                                      margin_levels=(s.margin_reduce_ratio, s.margin_close_ratio))
        if portfolio.futures:  # the margin levels and liquidation prices of the positions it restarts with
            for strategy, symbol in [(a.strategy, sym) for a in portfolio.accounts.values() for sym in a.positions]:
                self.engine.watch(strategy, symbol)
        if not portfolio.accounts:
            allocation = self.published_allocation()
            self.treasury.open_accounts(portfolio, venue, s.capital, allocation.weights if allocation
                                        else equal_weights(s.strategies), self.event_time)
        self.engine.seen = self.journal.seen_signal_ids()
        self.engine.restore()
        gauge = self.metrics.gauge
        self.equity_gauge = gauge("mesh_equity_usdt", "portfolio equity: cash and positions at the last price")
        self.exposure_gauge = gauge("mesh_exposure_usdt", "open positions at the last price")
        self.strategy_equity_gauge = gauge("mesh_strategy_equity_usdt", "a strategy's sub-account equity",
                                           ("strategy",))
        self.positions_gauge = gauge("mesh_open_positions", "open positions (symbols held)", ("strategy",))
        for (strategy, symbol), stored, rebuilt in self.journal.refresh_positions(portfolio):
            self.log.warning("position_mirror_refreshed", strategy=strategy, symbol=symbol, stored=stored,
                             from_trades=rebuilt)
        self.last_prices()
        self.engine.republish(self.journal.unpublished_trades())
        # Ticks only mark the books and match resting orders: read before each signal and every 50 ms, they
        # do not wake the executor while the strategies work on the same tick (a wake-up is ~100 µs on 2 cores).
        self.ticks = self.subscribe([s.endpoint("feed.pub")], [tick_topic(sym) for sym in s.symbols], self.on_tick,
                                    wake=False)
        self.loop.every(0.05, self.ticks.on_readable)
        if s.fill_model == "book":
            self.subscribe([s.endpoint("feed.pub")], [book_topic(sym) for sym in s.symbols], self.on_book)
        self.subscribe([s.endpoint(f"strategy.{name}.pub") for name in s.strategies], [b"sig."], self.on_signal)
        self.subscribe([s.endpoint("allocator.pub")], [b"alloc"], self.on_allocation)
        if s.market == "usdm":
            self.subscribe([s.endpoint("risk.pub")], [b"risk.close"], self.on_margin_close)
            if not venue.remote:  # an exchange settles funding itself: the income history says what it booked
                self.funding_handled = {sym: self.journal.last_funding(sym) for sym in s.symbols}
                self.catch_up_funding()  # the settlements that went by while this executor was down
                self.subscribe([s.endpoint("feed.pub")], [funding_topic(sym) for sym in s.symbols], self.on_funding)
                self.loop.every(FUNDING_CHECK_S, self.catch_up_funding)
        self.serve("executor.rep", ExecutorRequests, self.on_request)
        if venue.remote:
            self.engine.start()
            self.loop.every(s.live_check_s, self.engine.check)
            self.user_stream = UserStream(s, self.inbox("userstream", self.on_order_updates), self.ctx, self.log)
            self.user_stream.start()
        self.loop.every(1.0, self.publish_account)
        allocation = self.published_allocation()
        if allocation and self.treasury.applied is not None:  # a change published while we were down
            self.on_allocation(b"alloc", allocation)
        self.loop.every(0.1, self.sync_store)
        self.loop.every(0.25, self.engine.expire)
        self.log.info("books_rebuilt", equity=portfolio.equity(), cash=portfolio.cash(), trades=portfolio.trades(),
                      signals_seen=len(self.engine.seen), venue=venue.name)

    def use_exchange_brackets(self, venue: CcxtVenue) -> None:
        """Margin and liquidation prices from the exchange's brackets; the bundled ones if it cannot say."""
        try:
            found = venue.leverage_brackets(self.settings.symbols)
        except (VenueRejected, VenueUnavailable) as error:
            self.log.warning("brackets_unavailable", error=str(error), using="the bundled brackets")
            return
        install_brackets(found)
        self.log.info("brackets_installed", symbols=sorted(found),
                      tiers={symbol: len(tiers) for symbol, tiers in found.items()})

    def published_allocation(self) -> Allocation | None:
        """The allocator's latest allocation, which Redis keeps while this process is down."""
        current = self.hot.get("alloc")
        return Allocation(weights={k: Decimal(v) for k, v in current["weights"].items()},
                          reason=current.get("reason", "")) if current else None

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
        self.ticks.on_readable()  # the marks as fresh as the signal
        self.engine.on_signal(signal)
        self.event_time = self.engine.event_time

    def on_allocation(self, topic: bytes, allocation: Allocation) -> None:
        if self.treasury.rebalance(self.engine.portfolio, allocation.weights, allocation.reason, self.event_time):
            self.publish_account()

    def on_margin_close(self, topic: bytes, close: MarginClose) -> None:
        """The risk guard's margin rule: close the strategy's positions before they are liquidated."""
        self.ticks.on_readable()
        self.engine.close_all("risk guard", close.reason, self.engine.portfolio.marks, close.strategy)
        self.publish_account()

    def on_funding(self, topic: bytes, funding: FundingRate) -> None:
        """A paper funding settlement: the feed recorded it before publishing it, so it is booked from the store,
        with any earlier one this executor has not handled, in order."""
        self.ticks.on_readable()
        self.catch_up_funding([funding.symbol], announced=funding.et)

    def catch_up_funding(self, symbols: list[str] | None = None, announced: int = 0) -> None:
        """Book the recorded settlements after the last one handled: every open position in the symbol pays or
        receives it at the mark. The bus brings each as it happens (`announced`); the store has the ones that
        went by while this executor was down or before its subscription took. Each is booked once (its ledger
        ref)."""
        for symbol in symbols or self.settings.symbols:
            for settled_at, rate, mark in self.store.funding_settlements(symbol, self.funding_handled[symbol]):
                mark = mark or self.mark_at(symbol, settled_at)
                if mark is None:
                    self.log.error("funding_unbooked", symbol=symbol, et=settled_at, why="no price known yet")
                    break  # tried again at the next check, in order
                holders = self.journal.positions_at(symbol, settled_at - 1)  # its trades: before the settlement
                for entry in self.engine.settle_funding(symbol, rate, mark, settled_at, holders):
                    self.log.info("funding_booked", strategy=entry.strategy, symbol=entry.symbol,
                                  amount=str(entry.amount), reason=entry.reason, late=settled_at != announced)
                self.funding_handled[symbol] = settled_at

    def mark_at(self, symbol: str, settled_at: int) -> Decimal | None:
        """A settlement recorded without its mark: the close of the stored candle it ends, else the latest price."""
        closing = self.store.bars(symbol, self.settings.timeframe, settled_at - timeframe_ms(self.settings.timeframe),
                                  settled_at)
        return to_decimal(closing[-1].close) if closing else self.engine.marks.latest(symbol)

    def on_request(self, request: CloseAll) -> ClosedAll:
        closed = self.engine.close_all(request.by, request.reason, self.engine.portfolio.marks)
        self.store.agent_event(self.name, "close_all", {"by": request.by, "reason": request.reason,
                                                        "positions": closed.positions, "filled": closed.filled,
                                                        "event_time": self.event_time})
        return closed

    def on_order_updates(self, client_order_ids: Iterator[list[bytes]]) -> None:
        """Order updates pushed by the exchange: the orders are looked up at once instead of at the next check."""
        self.engine.refresh_orders({frames[0].decode() for frames in client_order_ids})

    # ----- state out, off the order path --------------------------------------------------------------------
    def sync_store(self) -> None:
        """Every 100 ms: mark fills as published (the outbox) and mirror positions. Trades are the truth;
        a crash loses neither (start-up republishes and rebuilds from them)."""
        engine = self.engine
        if engine.unpublished or engine.touched:
            published, engine.unpublished = engine.unpublished, []
            touched, engine.touched = engine.touched, set()
            self.journal.sync(published, touched, engine.portfolio)

    def publish_account(self) -> None:
        portfolio = self.engine.portfolio
        snapshot = portfolio.snapshot()
        snapshot.et = self.event_time
        self.pub.publish(b"acct", snapshot)
        self.gauge_account(snapshot)
        self.hot.put_account(snapshot, self.event_time)
        self.treasury.track_performance(portfolio, snapshot, self.event_time)

    def gauge_account(self, snapshot: AccountSnapshot) -> None:
        """The account for Prometheus, from the snapshot published every second: never per fill."""
        self.equity_gauge.labels(self.name).set(float(snapshot.equity))
        self.exposure_gauge.labels(self.name).set(float(snapshot.exposure))
        for account in snapshot.accounts:
            if account.strategy == CASH:
                continue  # the cash line: counted in mesh_equity_usdt (its share: mesh_allocation_cash_ratio)
            self.strategy_equity_gauge.labels(self.name, account.strategy).set(float(account.equity))
            self.positions_gauge.labels(self.name, account.strategy).set(len(account.positions))

    def teardown(self) -> None:
        if self.user_stream is not None:
            self.user_stream.stop()
        self.sync_store()


if __name__ == "__main__":
    main(Executor)
