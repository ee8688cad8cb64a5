"""The execution engine in-process, on a real SQLite store, with the paper venue: the order path from
signal to books without sockets (the executor service only wires the bus to it)."""
from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from meshtrader.domain.money import FeeModel
from meshtrader.domain.portfolio import Portfolio
from meshtrader.execution.engine import ExecutionEngine
from meshtrader.execution.planning import OrderRules
from meshtrader.execution.treasury import Treasury
from meshtrader.execution.venue import VenueUnavailable
from meshtrader.persistence.ledger import Ledger
from meshtrader.persistence.orders import OrderJournal
from meshtrader.persistence.store import Store
from meshtrader.runtime.log import SilentLogger
from meshtrader.venues.paper import PaperVenue
from meshtrader.wire.messages import Approval, OrderBook, Signal

QUIET = SilentLogger("test")
APPROVE = Approval(approved=True, rule="within_limits", reason="ok", trading_state="ACTIVE")


class Events:
    def __init__(self) -> None:
        self.fills, self.orders, self.venue = [], [], []

    def fill(self, fill) -> None:
        self.fills.append(fill)

    def order(self, update) -> None:
        self.orders.append(update)

    def venue_status(self, status) -> None:
        self.venue.append(status)


class Rig:
    """An engine over a store in a temp dir; `restart` builds a new one over the same store."""

    def __init__(self, path, order_type="market", fill_model="fixed", approve=None) -> None:
        self.path, self.order_type, self.fill_model = path, order_type, fill_model
        self.verdict = approve or (lambda request: APPROVE)
        self.store = Store(path / "mesh.db", hot_path=True)
        portfolio = Portfolio()
        Treasury(Ledger(self.store), QUIET).fund(portfolio, D("10000"), {"s": D("1")}, 0)
        self.build()

    def build(self) -> None:
        self.events, self.asked = Events(), []
        portfolio = Portfolio.rebuild(self.store.ledger(), self.store.trades())
        rules = OrderRules(D("0.10"), FeeModel(D("0.0005"), D("0.0002")), D("5"), order_type=self.order_type,
                           fill_model=self.fill_model)
        self.journal = OrderJournal(self.store)
        self.engine = ExecutionEngine(portfolio, PaperVenue(rules.fees, self.fill_model, QUIET), rules, self.approve,
                                      self.journal, self.events, QUIET, order_timeout_s=60)
        self.engine.restore()

    def approve(self, request):
        self.asked.append(request)
        return self.verdict(request)

    def restart(self) -> None:
        self.store.close()
        self.store = Store(self.path / "mesh.db", hot_path=True)
        self.build()

    def signal(self, side: str, price: float, et: int, n: int = 0) -> Signal:
        signal = Signal(signal_id=f"s:ETHUSDT:{et}:{side}:{n}", strategy="s", symbol="ETHUSDT", side=side,
                        confidence=1.0, reason="test", price=price, et=et, st=time.time_ns())
        self.engine.on_tick("ETHUSDT", et - 1, D(repr(price)))
        self.engine.on_signal(signal)
        return signal

    def history(self, order_id: str) -> list[str]:
        return [r[0] for r in self.store.query("SELECT to_status FROM order_events WHERE order_id = ? ORDER BY seq",
                                               (order_id,))]

    def assert_books_are_the_stores(self) -> None:
        rebuilt = Portfolio.rebuild(self.store.ledger(), self.store.trades())
        assert rebuilt.cash() == self.engine.portfolio.cash()
        assert {s: p.qty for s, p in rebuilt.accounts["s"].positions.items()} == \
            {s: p.qty for s, p in self.engine.portfolio.accounts["s"].positions.items()}


@pytest.fixture
def rig(tmp_path):
    made = Rig(tmp_path)
    yield made
    made.store.close()


def test_a_market_order_is_approved_filled_journaled_and_published(rig):
    rig.signal("buy", 2500.0, 60_000)
    [fill] = rig.events.fills
    assert fill.price == D("2501.25") and fill.qty == D("0.399") and fill.fee == D("0.49899938")  # 5 bp slipped
    assert rig.engine.portfolio.accounts["s"].cash == D("10000") - fill.qty * fill.price - fill.fee
    assert [u.status for u in rig.events.orders] == ["SUBMITTED", "ACCEPTED", "FILLED"]
    assert rig.history(fill.order_id) == ["SUBMITTED", "ACCEPTED", "FILLED"]
    [(status, price)] = rig.store.query("SELECT status, price FROM orders")
    assert (status, price) == ("FILLED", "2501.25")
    assert rig.asked[0].strategy_equity == D("10000") and not rig.asked[0].reduces
    rig.signal("sell", 2600.0, 120_000)
    assert rig.events.fills[-1].realized_pnl > 0 and not rig.engine.portfolio.accounts["s"].positions["ETHUSDT"].qty
    rig.assert_books_are_the_stores()


def test_duplicates_refusals_and_no_answer_are_recorded_never_filled(tmp_path):
    verdicts = iter([Approval(approved=False, rule="max_exposure", reason="too much", trading_state="ACTIVE"),
                     "risk guard unavailable: no answer in 2 x 500 ms"])
    rig = Rig(tmp_path, approve=lambda request: next(verdicts))
    rig.signal("buy", 2500.0, 60_000)
    rig.signal("buy", 2500.0, 60_000)  # the same signal id again: dropped before planning
    rig.signal("buy", 2500.0, 120_000)
    rig.signal("sell", 2500.0, 180_000)  # nothing to sell: recorded without an order
    assert rig.engine.duplicates == 1 and not rig.events.fills
    reasons = [r[0] for r in rig.store.query("SELECT reason FROM orders WHERE status = 'REJECTED' ORDER BY event_time")]
    assert reasons == ["max_exposure: too much", "risk_unavailable: risk guard unavailable: no answer in 2 x 500 ms"]
    assert rig.store.query("SELECT outcome FROM signals")[0][0] == "no position to sell"
    assert rig.journal.seen_signal_ids() == rig.engine.seen  # a restart acts on none of them again
    rig.store.close()


def test_a_limit_order_rests_holding_cash_fills_through_its_price_and_survives_a_restart(tmp_path):
    rig = Rig(tmp_path, order_type="limit")
    rig.signal("buy", 2500.0, 60_000)
    [resting] = rig.engine.working.values()
    limit = resting.request.price
    assert limit == D("2499.50") and rig.events.orders[-1].status == "ACCEPTED"  # 2 bp under, rounded down
    held = rig.engine.portfolio.accounts["s"].reserved
    assert held == resting.request.qty * limit + FeeModel(D("0.0005"), D("0.0002")).fee(resting.request.qty * limit,
                                                                                         "maker")
    rig.restart()  # the resting order and the cash it holds come back from the store
    assert rig.engine.portfolio.accounts["s"].reserved == held and list(rig.engine.working) == [resting.order.order_id]
    rig.engine.on_tick("ETHUSDT", 70_000, limit)  # at the price: not through it
    assert not rig.events.fills
    rig.engine.on_tick("ETHUSDT", 80_000, limit - D("0.5"))
    [fill] = rig.events.fills
    assert (fill.price, fill.liquidity, fill.fee) == (limit, "maker", (fill.qty * limit * D("0.0002")).quantize(D("1e-8")))
    assert rig.engine.portfolio.accounts["s"].reserved == 0 and not rig.engine.working
    assert rig.history(fill.order_id) == ["SUBMITTED", "ACCEPTED", "FILLED"]
    rig.assert_books_are_the_stores()
    rig.store.close()


def test_resting_orders_are_withdrawn_by_an_exit_and_canceled_at_their_timeout(tmp_path):
    rig = Rig(tmp_path, order_type="limit")
    rig.signal("buy", 2500.0, 60_000)
    rig.signal("sell", 2500.0, 120_000)  # the exit withdraws the entry still resting
    first = rig.store.query("SELECT status, reason FROM orders WHERE order_type = 'limit'")
    assert first[0][0] == "CANCELED" and "exit signal" in first[0][1]
    rig.signal("buy", 2500.0, 180_000, n=1)
    rig.engine.on_tick("ETHUSDT", 180_000 + 60_001, D("2600"))
    rig.engine.expire()
    [(status, reason)] = rig.store.query("SELECT status, reason FROM orders WHERE status = 'CANCELED' AND "
                                         "reason LIKE 'timeout%'")
    assert rig.engine.portfolio.accounts["s"].reserved == 0 and not rig.engine.working
    rig.store.close()


def test_the_book_fill_model_walks_levels_and_expires_what_the_book_lacks(tmp_path):
    rig = Rig(tmp_path, fill_model="book")
    rig.engine.on_book(OrderBook(symbol="ETHUSDT", bids=[(2499.0, 5.0)], asks=[(2500.0, 0.1), (2500.5, 0.1)]))
    rig.signal("buy", 2500.0, 60_000)
    assert [(f.qty, f.price) for f in rig.events.fills] == [(D("0.1"), D("2500.0")), (D("0.1"), D("2500.5"))]
    [(status, reason)] = rig.store.query("SELECT status, reason FROM orders")
    assert rig.history(rig.events.fills[0].order_id)[-1] == "EXPIRED" and status == "EXPIRED"
    assert [t[0] for t in rig.store.query("SELECT trade_id FROM trades ORDER BY trade_id")] == \
        [f.trade_id for f in rig.events.fills]
    rig.assert_books_are_the_stores()
    rig.store.close()


class SilentExchange:
    """An exchange that does not answer a balance request (the outside boundary, as the venue sees it)."""

    remote = True

    def balances(self) -> dict:
        raise VenueUnavailable("binance: timed out")


def test_a_live_first_start_funds_nothing_while_the_exchange_does_not_say_what_it_holds(tmp_path):
    store = Store(tmp_path / "mesh.db")
    try:
        treasury, portfolio = Treasury(Ledger(store), QUIET), Portfolio()
        with pytest.raises(VenueUnavailable):
            treasury.open_accounts(portfolio, SilentExchange(), D("100000"), {"s": D("1")}, 0)
        assert portfolio.accounts == {} and store.ledger() == [] and treasury.applied is None
    finally:
        store.close()
