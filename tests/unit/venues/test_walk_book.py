"""Paper fills walking an order book (meshtrader.venues.matching.walk_book)."""
from __future__ import annotations

from decimal import Decimal

from meshtrader.domain.money import fee, instrument

D = Decimal


def test_walking_the_book_takes_levels_in_order_within_cash_and_lots():
    from meshtrader.venues.matching import walk_book

    spec = instrument("BTCUSDT")  # step 0.001
    asks = [(100000.0, 0.0105), (100010.0, 0.02), (100020.0, 1.0)]
    walk = walk_book(asks, D("0.05"), spec)
    assert walk.fills == [(D("0.0105"), D("100000.0")), (D("0.02"), D("100010.0")), (D("0.0195"), D("100020.0"))]
    assert walk.filled == D("0.05") and D(0) < walk.slippage_bp("buy", D("100000")) < D("2")
    thin = walk_book(asks[:2], D("0.05"), spec)  # 0.0305 on offer: whole lots only, the rest unfilled
    assert thin.filled == D("0.030") and thin.fills[-1] == (D("0.0195"), D("100010.0"))
    budget = D("2000")
    poor = walk_book(asks, D("0.05"), spec, budget, D("0.0005"))
    assert poor.filled == D("0.019")
    assert sum(q * p + fee(q * p, D("0.0005")) for q, p in poor.fills) <= budget
    assert walk_book([], D("1"), spec).fills == []
