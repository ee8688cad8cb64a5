"""The one matching engine: how an order meets a market, for the paper venue, the backtester (through
the paper venue) and the exchange simulator alike.

- Fees: the domain's `FeeModel` (taker for what takes liquidity, maker for what rests), exact to 1e-8;
  every fill is a `Match` made by `match`.
- Market orders: at a given price (the fixed-slippage and instant fill models price it, the simulator
  its last trade), or by walking an order book level by level (`walk_book`), whole lots only, within a
  cash budget.
- Limit orders rest in a `LimitBook`, keyed by whoever's order id (the mesh's, or the simulated
  exchange's), and fill, whole and as makers at their price, when the market trades *through* their
  price, not merely at it.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meshtrader.domain.money import BP, MAKER, ZERO, FeeModel, fee


@dataclass(frozen=True)
class Match:
    """One fill: `qty` at `price`, taking or adding liquidity, and the fee that costs in the quote asset."""

    qty: Decimal
    price: Decimal
    liquidity: str  # TAKER / MAKER
    fee: Decimal

    @property
    def notional(self) -> Decimal:
        return self.qty * self.price


def match(qty: Decimal, price: Decimal, liquidity: str, fees: FeeModel) -> Match:
    """A fill of `qty` at `price`, charged the fee model's rate for the liquidity it took or added."""
    return Match(qty, price, liquidity, fees.fee(qty * price, liquidity))


@dataclass(frozen=True)
class BookWalk:
    """What a market order takes from an order book: one fill per level, best first, in whole lots."""

    fills: list[tuple[Decimal, Decimal]]  # (qty, price)
    wanted: Decimal
    levels: int  # levels the book offered

    @property
    def filled(self) -> Decimal:
        return sum((qty for qty, _ in self.fills), ZERO)

    def slippage_bp(self, side: str, mark: Decimal) -> Decimal:
        """How far the average fill is from the mark, against us, in bp."""
        if not self.fills:
            return ZERO
        average = sum((q * p for q, p in self.fills), ZERO) / self.filled
        return (average - mark if side == "buy" else mark - average) / mark / BP


def walk_book(levels: list[tuple[float, float]], qty: Decimal, spec: Any, budget: Decimal | None = None,
              fee_rate: Decimal = ZERO) -> BookWalk:
    """Take `qty` from the book's levels (the asks for a buy, the bids for a sell), best first. A buy
    stops where its fills and fees would spend more than `budget`; what the book cannot give is left
    unfilled; the total is whole lots of the instrument's step."""
    fills, left, spent = [], qty, ZERO
    for raw_price, raw_size in levels:
        if left <= 0:
            break
        price = Decimal(repr(raw_price))
        take = min(Decimal(repr(raw_size)), left)
        if budget is not None:
            while take > 0 and spent + take * price + fee(take * price, fee_rate) > budget:
                take = spec.floor_qty(min(take - spec.qty_step, (budget - spent) / (price * (1 + fee_rate))))
            if take <= 0:
                break
        fills.append((take, price))
        left -= take
        spent += take * price + fee(take * price, fee_rate)
    excess = sum((q for q, _ in fills), ZERO) - spec.floor_qty(sum((q for q, _ in fills), ZERO))
    while excess > 0 and fills:
        last_qty, last_price = fills[-1]
        if last_qty <= excess:
            fills.pop()
            excess -= last_qty
        else:
            fills[-1] = (last_qty - excess, last_price)
            excess = ZERO
    return BookWalk(fills, qty, len(levels))


def trades_through(side: str, limit: Decimal, price: Decimal) -> bool:
    """A resting order fills when the market trades through its price, not merely at it."""
    return price < limit if side == "buy" else price > limit


@dataclass
class RestingLimit:
    order_id: str | int  # the mesh's order id (paper venue) or the exchange's own (simulator)
    symbol: str
    side: str  # "buy" / "sell"
    qty: Decimal  # what is left to fill
    price: Decimal


class LimitBook:
    """Resting limit orders, by id: which ones a trade at a price goes through."""

    def __init__(self) -> None:
        self.orders: dict[str | int, RestingLimit] = {}

    def rest(self, order: RestingLimit) -> None:
        self.orders[order.order_id] = order

    def remove(self, order_id: str | int) -> RestingLimit | None:
        return self.orders.pop(order_id, None)

    def trade(self, symbol: str, price: Decimal, fees: FeeModel) -> list[tuple[RestingLimit, Match]]:
        """A trade at `price`: the orders it goes through leave the book, each filled whole at its own
        price as a maker."""
        hit = [o for o in self.orders.values() if o.symbol == symbol and trades_through(o.side, o.price, price)]
        for order in hit:
            del self.orders[order.order_id]
        return [(order, match(order.qty, order.price, MAKER, fees)) for order in hit]
