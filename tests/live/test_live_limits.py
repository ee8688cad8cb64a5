"""Live limit orders against the exchange simulator with the real ccxt: they rest at the exchange,
fill there as makers (booked from the exchange's own trade reports, learned from the user-data stream:
the executor's own checks are set too rare to find them here), and the ones still resting at the
timeout are canceled at the exchange. The books end equal to the exchange's balances."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from conftest import LIVE_ENV, Mesh, assert_books_are_the_exchanges, log_events, order_history, wait_for


@pytest.fixture(scope="module")
def live_limits(sim, tmp_path_factory):
    mesh = Mesh(Path(tmp_path_factory.mktemp("livelimits")), {
        **LIVE_ENV, "MESH_EXCHANGE_URL": sim, "MESH_ORDER_TYPE": "limit", "MESH_ORDER_TIMEOUT_S": "600",
        "MESH_LIVE_CHECK_S": "600"})
    mesh.start()
    yield mesh
    mesh.stop()


def limit_orders(mesh: Mesh, status: str) -> list[tuple]:
    return mesh.query("SELECT order_id, price, reason FROM orders WHERE order_type = 'limit' AND status = ?",
                      (status,))


def test_live_limit_orders_fill_as_makers_or_are_canceled_at_the_timeout(live_limits, sim):
    mesh = live_limits
    assert wait_for(lambda: log_events(mesh, "user_stream_up"), 30, "the user-data stream")
    filled = wait_for(lambda: limit_orders(mesh, "FILLED"), 120, "a live limit order filled")
    canceled = wait_for(lambda: [o for o in limit_orders(mesh, "CANCELED") if "timeout" in o[2]], 120,
                        "a live limit order canceled at its timeout")
    order_id, limit, _ = filled[0]
    [(qty, price, fee, liquidity)] = mesh.query("SELECT qty, price, fee, liquidity FROM trades WHERE order_id = ?",
                                                (order_id,))
    assert liquidity == "maker" and Decimal(price) == Decimal(limit)
    assert Decimal(fee) == (Decimal(qty) * Decimal(price) * Decimal("0.0002")).quantize(Decimal("1e-8"))
    order_id, _, _ = canceled[0]
    assert order_history(mesh, order_id) == ["SUBMITTED", "ACCEPTED", "CANCELED"]
    assert not mesh.query("SELECT trade_id FROM trades WHERE order_id = ?", (order_id,))
    mesh.quiesce()
    assert_books_are_the_exchanges(mesh, sim)
