"""Exact money: Decimal arithmetic, instrument precision, paper fill prices and fees.

Cash and fees are kept to 1e-8 USDT (the quote asset's precision), prices to the instrument's tick,
quantities to its step. With those, every cash flow is exact and cash + positions at the last price
equals equity to the last digit.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

CASH_QUANTUM = Decimal("0.00000001")
ZERO = Decimal(0)
BP = Decimal("0.0001")


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    """A float's repr is the shortest string that reads back as it, i.e. the exchange's own digits."""
    if isinstance(value, Decimal):
        return value
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def cash(value: Decimal) -> Decimal:
    return value.quantize(CASH_QUANTUM, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class Instrument:
    symbol: str
    price_tick: Decimal
    qty_step: Decimal
    min_qty: Decimal
    min_notional: Decimal

    def round_price(self, price: Decimal, side: str) -> Decimal:
        """Round against the trader: buys up, sells down, to the tick."""
        steps = price / self.price_tick
        rounded = steps.to_integral_value(rounding=ROUND_CEILING if side == "buy" else ROUND_FLOOR)
        return (rounded * self.price_tick).quantize(self.price_tick)

    def floor_qty(self, qty: Decimal) -> Decimal:
        return ((qty / self.qty_step).to_integral_value(rounding=ROUND_DOWN) * self.qty_step).quantize(self.qty_step)


# Binance USD-M perpetuals, as the bundled data; other symbols get a conservative default.
INSTRUMENTS = {
    "BTCUSDT": Instrument("BTCUSDT", Decimal("0.1"), Decimal("0.001"), Decimal("0.001"), Decimal("100")),
    "ETHUSDT": Instrument("ETHUSDT", Decimal("0.01"), Decimal("0.001"), Decimal("0.001"), Decimal("20")),
}


def instrument(symbol: str) -> Instrument:
    return INSTRUMENTS.get(symbol) or Instrument(symbol, Decimal("0.00001"), Decimal("0.00001"),
                                                  Decimal("0.00001"), Decimal("5"))


def slipped_price(side: str, last: Decimal, slippage_bp: Decimal, spec: Instrument) -> Decimal:
    """Paper fill price: the last price moved against us by the slippage, rounded to the tick."""
    factor = 1 + slippage_bp * BP if side == "buy" else 1 - slippage_bp * BP
    return spec.round_price(last * factor, side)


def fee(notional: Decimal, rate: Decimal) -> Decimal:
    return cash(notional * rate)


TAKER, MAKER = "taker", "maker"  # a market order takes liquidity; a resting limit order adds it


@dataclass(frozen=True)
class FeeModel:
    taker: Decimal  # fractions of notional
    maker: Decimal

    def rate(self, liquidity: str) -> Decimal:
        return self.maker if liquidity == MAKER else self.taker

    def fee(self, notional: Decimal, liquidity: str) -> Decimal:
        return fee(notional, self.rate(liquidity))
