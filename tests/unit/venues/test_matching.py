"""The one matching engine (meshtrader.venues.matching), driven directly: as the paper venue uses it (the
mesh's string order ids) and as the exchange simulator does (the exchange's own numeric ids, one book per
account), so a paper fill and a simulated exchange's fill of the same order are the same fill."""
from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from meshtrader.domain.money import MAKER, TAKER, FeeModel
from meshtrader.execution.venue import OrderRequest
from meshtrader.runtime.log import SilentLogger
from meshtrader.venues.matching import LimitBook, Match, RestingLimit, match
from meshtrader.venues.paper import PaperVenue
from tools.exchange_sim.accounts import BinanceError, SimAccount, SimAccounts

FEES = FeeModel(D("0.0005"), D("0.0002"))
ETH_FILTERS = (D("0.01"), D("0.0001"))  # the simulator's tick and step for ETHUSDT
KEY = "key"


def exchange() -> tuple[SimAccounts, SimAccount]:
    accounts = SimAccounts({KEY: "secret"}, {"USDT": D("100000"), "ETH": D("10")}, FEES)
    return accounts, accounts.accounts[KEY]


def place(accounts: SimAccounts, account: SimAccount, kind: str, side: str, qty: str, price: D,
          limit: str | None = None) -> dict:
    params = {"symbol": "ETHUSDT", "side": side, "type": kind, "quantity": qty, **({"price": limit} if limit else {})}
    return accounts.place(account, params, price, int(time.time() * 1000), ETH_FILTERS)


def as_match(trade: dict) -> Match:
    """A simulator trade report in the matching engine's terms."""
    return Match(D(trade["qty"]), D(trade["price"]), MAKER if trade["isMaker"] else TAKER, D(trade["commission"]))


@pytest.mark.parametrize("order_id", ["mt-1", 1_000_001], ids=["mesh id", "exchange id"])
def test_a_resting_limit_fills_whole_at_its_price_as_a_maker_only_when_the_market_trades_through(order_id):
    book = LimitBook()
    book.rest(RestingLimit(order_id, "ETHUSDT", "buy", D("0.5"), D("2500.00")))
    assert book.trade("ETHUSDT", D("2500.00"), FEES) == []  # at the limit: not through it
    assert book.trade("BTCUSDT", D("1"), FEES) == []  # another symbol's trade
    [(order, fill)] = book.trade("ETHUSDT", D("2499.99"), FEES)
    assert order.order_id == order_id
    assert fill == Match(D("0.5"), D("2500.00"), MAKER, D("0.25000000")) and fill.notional == D("1250.0000")
    assert book.orders == {} and book.remove(order_id) is None  # filled whole: off the book


def test_a_market_order_fills_at_its_price_as_a_taker_charged_the_fee_model():
    fill = match(D("0.399"), D("2501.25"), TAKER, FEES)
    assert fill.fee == D("0.49899938") == FEES.fee(fill.notional, TAKER)


def test_the_paper_venue_and_the_simulator_fill_the_same_orders_alike():
    venue = PaperVenue(FEES, "fixed", SilentLogger("test"))
    accounts, account = exchange()
    price = D("2500.00")
    paper = venue.submit(OrderRequest("mt-1", "s", "ETHUSDT", "buy", D("0.5"), price, limit=False)).fills[0]
    market = place(accounts, account, "MARKET", "BUY", "0.5", price)
    assert Match(paper.qty, paper.price, paper.liquidity, paper.fee) == as_match(account.trades[-1])
    assert market["status"] == "FILLED"

    venue.submit(OrderRequest("mt-2", "s", "ETHUSDT", "sell", D("0.3"), D("2510.00"), limit=True))
    resting = place(accounts, account, "LIMIT", "SELL", "0.3", price, "2510.00")
    assert accounts.open_orders(account, "ETHUSDT") == [SimAccounts.view(resting)]
    accounts.cross("ETHUSDT", D("2510.00"), 0)
    assert venue.on_trade("ETHUSDT", D("2510.00")) == [] and resting["status"] == "NEW"
    accounts.cross("ETHUSDT", D("2510.01"), 0)
    [(order_id, report)] = venue.on_trade("ETHUSDT", D("2510.01"))
    paper = report.fills[0]
    assert order_id == "mt-2" and resting["status"] == "FILLED" and accounts.open_orders(account, None) == []
    assert Match(paper.qty, paper.price, paper.liquidity, paper.fee) == as_match(account.trades[-1])
    assert account.balances == {"USDT": D("100000") - D("1250.00000") - D("0.62500000") + D("753.00000")
                                - D("0.15060000"), "ETH": D("10.2")}


def test_the_simulators_partial_fills_and_cancels_keep_its_book_and_events_straight():
    accounts, account = exchange()
    accounts.partial_next = 2
    half = place(accounts, account, "MARKET", "SELL", "0.3", D("2500.00"))
    assert (half["status"], D(half["executedQty"])) == ("EXPIRED", D("0.15"))
    nothing = place(accounts, account, "MARKET", "SELL", "0.0001", D("2500.00"))  # half of one step: none
    assert nothing["status"] == "EXPIRED" and nothing["fills"] == []
    assert [e["x"] for e in account.events if e["e"] == "executionReport"] == ["NEW", "TRADE", "EXPIRED",
                                                                               "NEW", "EXPIRED"]
    resting = place(accounts, account, "LIMIT", "BUY", "0.1", D("2500.00"), "100.00")
    lookup = {"symbol": "ETHUSDT", "orderId": str(resting["orderId"])}
    assert accounts.cancel(account, lookup, 0)["status"] == "CANCELED"
    assert account.resting.orders == {} and accounts.open_orders(account, None) == []
    accounts.cross("ETHUSDT", D("1"), 0)  # through its old limit: a canceled order no longer fills
    assert resting["fills"] == []
    for done in (resting, half):
        with pytest.raises(BinanceError, match="Unknown order"):
            accounts.cancel(account, {"symbol": "ETHUSDT", "orderId": str(done["orderId"])}, 0)
