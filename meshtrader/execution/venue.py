"""What the execution engine asks of a venue, and what a venue answers.

A venue takes orders by the engine's client order id and reports on them as `VenueReport`s: every fill
so far (each with the venue's own trade id, price and fee) and whether the order is still working. The
engine books what is new in a report, so a report may be repeated (a lookup after a lost answer, a
user-data event and a periodic check of the same order) without booking anything twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from meshtrader.wire.messages import OrderBook


class VenueRejected(Exception):
    """The venue refused (insufficient balance, filters, duplicate id...): the order ends REJECTED."""


class VenueUnavailable(Exception):
    """No clear answer (network, timeout, venue down): the order's fate is unknown until looked up."""


@dataclass(frozen=True)
class VenueFill:
    trade_id: str  # the venue's id of the trade, unique within the order
    qty: Decimal  # what the position moves by
    price: Decimal
    fee: Decimal  # in the quote currency, so cash moves by exactly what the venue moved it by
    liquidity: str  # taker / maker
    detail: str = ""  # how it filled, for the order's history ("book level 2", "exchange trade 17")
    note: str = ""  # a fee the books cannot carry (paid in a third asset)


@dataclass(frozen=True)
class VenueReport:
    """An order as the venue knows it now."""

    fills: tuple[VenueFill, ...] = ()
    open: bool = False  # still working (resting): more fills may come
    status: str = "closed"  # once not open, in ccxt's words: closed (filled), canceled, expired, rejected
    reason: str = ""  # why it ended as it did, in the venue's words


@dataclass(frozen=True)
class UnbookedFill:
    """A trade at the venue the store does not have."""

    client_id: str
    trade_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal

    def __str__(self) -> str:
        return f"trade {self.trade_id} of order {self.client_id} ({self.symbol} {self.side} {self.qty} at {self.price})"


@dataclass(frozen=True)
class OrderRequest:
    order_id: str  # the client order id: how the order is found again after a lost answer
    strategy: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal  # a limit order's limit; a market order's expected price (what the fill model prices)
    limit: bool  # rests until the market trades through `price`, as a maker
    reduce_only: bool = False  # futures: may only shrink the position (an exit never opens the other side)


@dataclass(frozen=True)
class VenuePosition:
    """A futures position as the venue knows it (one-way mode)."""

    symbol: str
    qty: Decimal  # signed: a short is negative
    entry_price: Decimal
    leverage: Decimal
    liquidation_price: Decimal | None = None


@dataclass(frozen=True)
class FundingPayment:
    """A funding settlement the venue booked on the account (Binance's income history, FUNDING_FEE)."""

    payment_id: str  # the venue's id of the entry, so a payment is booked once
    symbol: str
    amount: Decimal  # received: positive; paid: negative
    time_ms: int


class Venue(Protocol):
    """One place orders go: the paper venue (the matching engine over the mesh's market data) or an
    exchange through ccxt. The engine drives every venue the same way."""

    name: str
    remote: bool  # orders leave the process: stored SUBMITTED before sending, looked up when unanswered
    lost_after_s: float  # a remote order still unknown this long after sending can never arrive

    def submit(self, request: OrderRequest) -> VenueReport:
        """Place an order. Raises VenueRejected (refused) or VenueUnavailable (fate unknown)."""

    def cancel(self, symbol: str, order_id: str) -> VenueReport | None:
        """Cancel a working order; its final state either way, or None if the venue has no such order."""

    def lookup(self, symbol: str, order_id: str) -> VenueReport | None:
        """The order as the venue knows it now, or None if it has no such order."""

    def expected_slippage_bp(self, symbol: str, side: str, qty: Decimal, mark: Decimal,
                             budget: Decimal | None) -> Decimal | None:
        """What a market order of `qty` would slip at this venue now, or None for the fill model's
        fixed estimate."""

    def on_trade(self, symbol: str, price: Decimal) -> list[tuple[str, VenueReport]]:
        """The market traded at `price`: reports on the orders that filled (the paper venue matches
        them; an exchange matches its own and reports through lookups and its user-data stream)."""

    def on_book(self, book: OrderBook) -> None:
        """The latest order book of a symbol, for venues whose fill model walks one."""

    def restore(self, request: OrderRequest, filled: Decimal) -> None:
        """An order working when the process stopped, back on the venue's books (paper: in memory)."""

    def ping(self) -> None:
        """Raises VenueUnavailable while the venue does not answer."""

    def balances(self) -> dict[str, Decimal] | None:
        """The account's balances by asset, or None where the venue keeps no account of its own."""

    def open_orders(self, symbols: list[str]) -> list[str]:
        """Client ids of the orders working at the venue."""

    def unbooked_fills(self, symbols: list[str], booked: set[str]) -> list[UnbookedFill]:
        """The venue's recent trades whose ids are not in `booked`."""

    def positions(self, symbols: list[str]) -> list[VenuePosition] | None:
        """The account's open futures positions, or None where the venue holds spot balances only."""

    def funding_payments(self, symbols: list[str], since_ms: int) -> list[FundingPayment]:
        """Funding the venue booked on the account since `since_ms` (futures; none on spot)."""

    def set_leverage(self, symbol: str, leverage: Decimal) -> None:
        """Futures: isolated margin at this leverage for the symbol, before the first order."""
