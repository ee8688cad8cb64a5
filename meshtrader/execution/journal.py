"""What the execution engine writes through: the store's `OrderJournal` in the mesh, a `MemoryJournal`
in a backtest (nothing to survive: the run is its own record)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Protocol

from meshtrader.domain.portfolio import Portfolio
from meshtrader.persistence.orders import FundingEntry, OrderChange, OrderRow, SavedOrder, TradeRow

__all__ = ["FundingEntry", "Journal", "MemoryJournal", "OrderChange", "OrderRow", "SavedOrder", "TradeRow"]


class Journal(Protocol):
    def record(self, change: OrderChange) -> None: ...
    def outcome(self, signal: Any, outcome: str) -> None: ...
    def rebuild(self, previous: Portfolio) -> Portfolio: ...
    def working_orders(self) -> list[SavedOrder]: ...
    def booked_venue_trade_ids(self) -> set[str]: ...
    def known_order_ids(self, order_ids: set[str]) -> set[str]: ...
    def funding(self, payments: list[FundingEntry]) -> list[FundingEntry]: ...
    def positions_at(self, symbol: str, event_time: int, last_held: bool = False) -> dict[str, Decimal]: ...


class MemoryJournal:
    """A journal that keeps nothing: a backtest's books live in its portfolio and its events."""

    def record(self, change: OrderChange) -> None:
        pass

    def outcome(self, signal: Any, outcome: str) -> None:
        pass

    def rebuild(self, previous: Portfolio) -> Portfolio:
        return previous

    def working_orders(self) -> list[SavedOrder]:
        return []

    def booked_venue_trade_ids(self) -> set[str]:
        return set()

    def known_order_ids(self, order_ids: set[str]) -> set[str]:
        return set()

    def funding(self, payments: list[FundingEntry]) -> list[FundingEntry]:
        return payments

    def positions_at(self, symbol: str, event_time: int, last_held: bool = False) -> dict[str, Decimal]:
        return {}  # a backtest settles funding on its own books (ExecutionEngine.settle_funding)


