"""USD-M futures books: signed positions, isolated margin, liquidation price, funding, exact to the digit."""
from __future__ import annotations

from decimal import Decimal as D

from meshtrader.domain.futures import bracket, funding_payment, margin_ratio, threshold_price
from meshtrader.domain.portfolio import Portfolio


def test_a_short_opened_and_closed_books_exactly():
    books = Portfolio("usdm", {"s": D(3)})
    books.fund("s", D("10000"))
    assert books.apply_fill("s", "BTCUSDT", "sell", D("0.150"), D("100000.0"), D("7.5")) == 0
    account = books.accounts["s"]
    position = account.positions["BTCUSDT"]
    assert (position.qty, position.cost, position.margin) == (D("-0.150"), D("-15000.0000"), D("5000.00000000"))
    assert account.cash == D("9992.5") and account.free_cash == D("4992.50000000")
    books.mark("BTCUSDT", D("98000.0"))
    assert books.unrealized("s") == D("300.0000") and books.equity("s") == D("10292.5000")
    assert books.exposure("s") == D("14700.0000")  # the absolute notional
    realized = books.apply_fill("s", "BTCUSDT", "buy", D("0.150"), D("98000.0"), D("7.35"))
    assert realized == D("300.0000")  # the price PnL, as the exchange reports it; fees apart
    assert account.cash == D("10000") - D("7.5") + D("300") - D("7.35") == books.equity("s")
    assert not position.qty and not position.margin and not account.margin


def test_a_partial_close_releases_cost_and_margin_pro_rata():
    books = Portfolio("usdm", {"s": D(2)})
    books.fund("s", D("10000"))
    books.apply_fill("s", "ETHUSDT", "buy", D("1.000"), D("2500.00"), D("1.25"))
    realized = books.apply_fill("s", "ETHUSDT", "sell", D("0.300"), D("2600.00"), D("0.39"))
    position = books.accounts["s"].positions["ETHUSDT"]
    assert realized == D("30.00") and position.cost == D("1750.00") and position.margin == D("875.00")


def test_liquidation_price_is_where_the_margin_ratio_reaches_one():
    qty, entry, leverage = D("0.100"), D("100000"), D(5)
    cost, margin = qty * entry, qty * entry / leverage
    liquidation = threshold_price("BTCUSDT", qty, cost, margin, D(1), D("0.1"))
    tier = bracket("BTCUSDT", cost)
    exact = (qty * entry - margin - tier.cum) / (qty - qty * tier.mmr)  # Binance's isolated, one-way formula
    assert liquidation == D("80321.3") and exact <= liquidation < exact + D("0.1")
    assert margin_ratio("BTCUSDT", qty, cost, margin, exact) == D(1)
    short = threshold_price("BTCUSDT", -qty, -cost, margin, D(1), D("0.1"))
    assert short == D("119521.9")  # (E (1 + 1/L)) / (1 + mmr), rounded down to the tick
    assert threshold_price("BTCUSDT", qty, cost, margin, D("0.5"), D("0.1")) > liquidation  # reduce first


def test_funding_longs_pay_shorts_receive_a_positive_rate():
    assert funding_payment(D("0.5"), D("100000"), D("0.0001")) == D("-5.00000000")
    assert funding_payment(D("-0.5"), D("100000"), D("0.0001")) == D("5.00000000")
    books = Portfolio("usdm")
    books.fund("s", D("1000"))
    books.credit_funding("s", D("-1.25"))
    assert books.accounts["s"].cash == D("998.75") and books.accounts["s"].funding == D("-1.25")
