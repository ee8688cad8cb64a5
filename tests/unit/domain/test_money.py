"""Money: exact prices, fees and quantities."""
from __future__ import annotations

from decimal import Decimal

from meshtrader.domain.money import fee, instrument, slipped_price, to_decimal

D = Decimal


def test_prices_fees_and_quantities_are_exact():
    btc = instrument("BTCUSDT")
    assert to_decimal(95505.4) == D("95505.4")
    assert slipped_price("buy", D("95500.0"), D("5"), btc) == D("95547.8")  # 95547.75 rounded up
    assert slipped_price("sell", D("95500.0"), D("5"), btc) == D("95452.2")  # 95452.25 rounded down
    assert fee(D("0.052") * D("95547.8"), D("0.001")) == D("4.96848560")
    assert btc.floor_qty(D("0.0529999")) == D("0.052")
