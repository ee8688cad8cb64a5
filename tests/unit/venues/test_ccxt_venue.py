"""The ccxt venue: fills booked exactly whatever asset the fee is in, and one adapter module per exchange."""
from __future__ import annotations

from decimal import Decimal

from meshtrader.domain.portfolio import Portfolio

D = Decimal


def test_exchange_fills_book_exactly_whatever_asset_the_fee_is_in():
    """Binance charges a buy's commission in the asset bought: the books hold what arrived, and cash
    moves by exactly what the exchange moved it by."""
    from meshtrader.domain.orders import Order, OrderStatus
    from meshtrader.execution.engine import end_state
    from meshtrader.venues.ccxt_venue import as_booked

    price, amount = D("60000.00"), D("0.00200")
    for side, charged, asset in (("buy", D("0.000002"), "BTC"), ("sell", D("0.000002"), "BTC"),
                             ("buy", D("0.06"), "USDT")):
        fill = as_booked("7", side, amount, price, charged, asset, "BTC", "USDT")
        book = Portfolio()
        book.fund("s", D("1000"))
        if side == "sell":
            book.apply_fill("s", "BTCUSDT", "buy", D("0.01"), price, D(0))
        position = book.accounts["s"].positions.get("BTCUSDT")
        cash_before, held_before = book.accounts["s"].cash, position.qty if position else D(0)
        book.apply_fill("s", "BTCUSDT", side, fill.qty, fill.price, fill.fee)
        sign = -1 if side == "buy" else 1
        quote_fee = charged if asset == "USDT" else D(0)
        base_fee = charged if asset == "BTC" else D(0)
        assert book.accounts["s"].cash - cash_before == sign * amount * price - quote_fee
        held = book.accounts["s"].positions["BTCUSDT"].qty - held_before
        assert held == -sign * amount - base_fee
    third = as_booked("8", "buy", amount, price, D("0.0001"), "BNB", "BTC", "USDT")
    assert third.fee == 0 and third.qty == amount and "BNB" in third.note
    accepted = Order("mt1", D("1"), OrderStatus.ACCEPTED)
    assert end_state(accepted, "canceled") == OrderStatus.CANCELED
    assert end_state(accepted, "rejected") == OrderStatus.EXPIRED  # not allowed from ACCEPTED: never forced


def test_the_readme_venue_adapter_example_is_one_module_that_registers_itself():
    """README's "A venue" adapter, as printed there, is picked for its exchange by name alone."""
    from support.strategy_files import python_block_of

    from meshtrader.venues.adapters import ADAPTERS, ExchangeAdapter, adapter_for

    assert type(adapter_for("binance", "spot")).__name__ == "Binance"
    assert type(adapter_for("okx", "spot")) is ExchangeAdapter  # no adapter yet: ccxt's unified way
    try:
        exec(compile(python_block_of("### A venue"), "okx.py", "exec"), {"__name__": "okx"})
        okx = adapter_for("okx", "usdm")
        assert okx.market_type == "usdm"
        assert okx.create_params("mt1") == {"clOrdId": "mt1"} and okx.lookup_params("mt1") == {"clOrdId": "mt1"}
    finally:
        ADAPTERS.pop("okx", None)
