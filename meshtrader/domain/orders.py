"""The order state machine: every order moves NEW -> SUBMITTED -> ACCEPTED -> (PARTIALLY_FILLED ->)
FILLED, or ends CANCELED, REJECTED or EXPIRED. A transition the machine does not allow is an error,
never silently applied: an exchange report out of order, or a bug, shows up instead of corrupting the
books. The executor stores every transition (`order_events`) and publishes it on `order`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import NamedTuple


class OrderStatus(StrEnum):
    NEW = "NEW"
    SUBMITTED = "SUBMITTED"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


S = OrderStatus
ALLOWED: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.NEW: frozenset({S.SUBMITTED, S.REJECTED, S.CANCELED}),
    S.SUBMITTED: frozenset({S.ACCEPTED, S.REJECTED, S.CANCELED, S.EXPIRED}),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED}),
    S.FILLED: frozenset(),
    S.CANCELED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
}
TERMINAL = frozenset(status for status, nexts in ALLOWED.items() if not nexts)


class InvalidTransition(ValueError):
    pass


class Transition(NamedTuple):
    """One step of an order's life (a tuple: made several times per order, on the tick-to-fill path)."""

    order_id: str
    seq: int
    before: OrderStatus
    after: OrderStatus
    filled_qty: Decimal
    reason: str


@dataclass
class Order:
    order_id: str
    qty: Decimal
    status: OrderStatus = OrderStatus.NEW
    filled_qty: Decimal = Decimal(0)
    history: list[Transition] = field(default_factory=list)
    seq_base: int = 0  # transitions already stored (an order restored after a restart)

    def move(self, to: OrderStatus, reason: str = "", filled_qty: Decimal | None = None) -> Transition:
        """Apply one transition, or raise InvalidTransition naming the order, the states and why."""
        if to not in ALLOWED[self.status]:
            raise InvalidTransition(f"order {self.order_id}: {self.status} -> {to} is not allowed ({reason})")
        filled = self.filled_qty if filled_qty is None else filled_qty
        if filled < self.filled_qty or filled > self.qty:
            raise InvalidTransition(f"order {self.order_id}: filled {filled} of {self.qty} after {self.filled_qty}")
        if to == S.FILLED and filled != self.qty:
            raise InvalidTransition(f"order {self.order_id}: FILLED with {filled} of {self.qty}")
        if to == S.PARTIALLY_FILLED and not 0 < filled < self.qty:
            raise InvalidTransition(f"order {self.order_id}: PARTIALLY_FILLED with {filled} of {self.qty}")
        transition = Transition(self.order_id, self.seq_base + len(self.history) + 1, self.status, to, filled, reason)
        self.status, self.filled_qty = to, filled
        self.history.append(transition)
        return transition

    def can_move(self, to: OrderStatus) -> bool:
        return to in ALLOWED[self.status]

    @property
    def done(self) -> bool:
        return self.status in TERMINAL
