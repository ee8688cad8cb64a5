"""Limit orders in the paper venue, end to end: they rest holding back their cash, fill only when the
market trades through them (as makers), time out, and survive a restart of the executor."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Mesh, wait_for, wait_settled
from test_mesh import reconcile


@pytest.fixture(scope="module")
def limit_mesh(tmp_path_factory):
    mesh = Mesh(Path(tmp_path_factory.mktemp("limits")), {
        "MESH_REPLAY_SPEED": "40", "MESH_ORDER_TYPE": "limit", "MESH_LIMIT_OFFSET_BP": "1",
        "MESH_ORDER_TIMEOUT_S": "180", "MESH_VALIDATION_EVERY_MIN": "100000000"})
    mesh.start()
    yield mesh
    mesh.stop()


def test_limit_orders_rest_fill_through_time_out_and_survive_a_restart(limit_mesh):
    mesh = limit_mesh
    filled = wait_for(lambda: mesh.query(
        "SELECT o.order_id, o.price, o.event_time, t.price, t.event_time, t.liquidity FROM orders o "
        "JOIN trades t ON t.order_id = o.order_id WHERE o.order_type = 'limit' AND o.status = 'FILLED'"), 90,
        "a limit order filled")
    order_id, limit, placed_et, price, filled_et, liquidity = filled[0]
    assert price == limit and liquidity == "maker" and filled_et > placed_et  # later, at its own price
    steps = mesh.query("SELECT to_status FROM order_events WHERE order_id=? ORDER BY seq", (order_id,))
    assert steps == [("SUBMITTED",), ("ACCEPTED",), ("FILLED",)]
    wait_for(lambda: mesh.query("SELECT 1 FROM orders WHERE order_type='limit' AND status='CANCELED' "
                                "AND reason LIKE 'timeout%'"), 90, "a limit order timing out")

    resting = None
    for _ in range(40):  # freeze market time with an order resting, then restart the executor under it
        assert "stopped" in mesh.ctl("stop", "feed")
        # the store's orders, not the account snapshot: the readings need not span its 1 s republishing
        resting = wait_settled(lambda: mesh.query("SELECT order_id FROM orders WHERE status='ACCEPTED'"), 30,
                               "the ticks already sent to be handled", interval=0.3)
        if resting:
            break
        assert "started" in mesh.ctl("start", "feed")
        wait_for(lambda: mesh.query("SELECT 1 FROM orders WHERE status='ACCEPTED'"), 30, "an order resting",
                 interval=0.02)  # stop the feed as soon as one rests: most fill within a few ticks
    assert resting, "no order was resting when the feed stopped"
    order_id = resting[0][0]
    assert "started" in mesh.ctl("restart", "executor")
    wait_for(lambda: '"event": "resting_orders_restored"' in (mesh.settings.log_dir / "executor.log").read_text(),
             60, "the executor to restore its resting orders")
    assert "started" in mesh.ctl("start", "feed")
    wait_for(lambda: mesh.query("SELECT status FROM orders WHERE order_id=? AND status IN ('FILLED', 'CANCELED')",
                                (order_id,)), 60, "the restored order to fill or time out")
    seqs = [s for (s,) in mesh.query("SELECT seq FROM order_events WHERE order_id=? ORDER BY seq", (order_id,))]
    assert seqs == [1, 2, 3]  # its history continues where it stopped
    mesh.quiesce()
    reconcile(mesh)
