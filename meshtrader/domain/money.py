"""Exact money: Decimal arithmetic, paper fill prices and fees.

Cash and fees are kept to 1e-8 USDT (the quote asset's precision), prices to the instrument's tick,
quantities to its step. With those, every cash flow is exact and cash + positions at the last price
equals equity to the last digit.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

# Instruments have their own module; `instrument` stays importable from here for its callers.
from meshtrader.domain.instruments import Instrument
from meshtrader.domain.instruments import instrument as instrument

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


def slipped_price(side: str, last: Decimal, slippage_bp: Decimal, spec: Instrument) -> Decimal:
    """Paper fill price: the last price moved against us by the slippage, rounded to the tick."""
    factor = 1 + slippage_bp * BP if side == "buy" else 1 - slippage_bp * BP
    return spec.round_price(last * factor, side)


def fee(notional: Decimal, rate: Decimal) -> Decimal:
    return cash(notional * rate)


TAKER, MAKER = "taker", "maker"  # a market order takes liquidity; a resting limit order adds it
LIQUIDATION = "liquidation"  # a futures position the exchange closed at its liquidation price


@dataclass(frozen=True)
class FeeModel:
    taker: Decimal  # fractions of notional
    maker: Decimal

    def rate(self, liquidity: str) -> Decimal:
        return self.maker if liquidity == MAKER else self.taker

    def fee(self, notional: Decimal, liquidity: str) -> Decimal:
        return fee(notional, self.rate(liquidity))
