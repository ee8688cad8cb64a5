"""The order state machine."""
from __future__ import annotations

from decimal import Decimal

import pytest

D = Decimal


def test_the_order_state_machine_refuses_what_it_does_not_allow():
    from meshtrader.domain.orders import InvalidTransition, Order, OrderStatus

    order = Order("mt1", D("0.3"))
    order.move(OrderStatus.SUBMITTED)
    order.move(OrderStatus.ACCEPTED)
    order.move(OrderStatus.PARTIALLY_FILLED, "1 of 3", D("0.1"))
    order.move(OrderStatus.PARTIALLY_FILLED, "2 of 3", D("0.2"))
    done = order.move(OrderStatus.FILLED, "3 of 3", D("0.3"))
    assert done.seq == 5 and order.done and [t.after for t in order.history][-1] == "FILLED"
    for bad in (lambda: order.move(OrderStatus.CANCELED),                                # terminal
                lambda: Order("mt2", D("1")).move(OrderStatus.FILLED, filled_qty=D("1")),  # NEW cannot fill
                lambda: Order("mt3", D("1"), OrderStatus.ACCEPTED).move(OrderStatus.FILLED, filled_qty=D("0.5")),
                lambda: Order("mt4", D("1"), OrderStatus.ACCEPTED, D("0.5")).move(
                    OrderStatus.PARTIALLY_FILLED, filled_qty=D("0.4"))):                # fills never go back
        with pytest.raises(InvalidTransition):
            bad()
    assert Order("mt5", D("1")).history == []
