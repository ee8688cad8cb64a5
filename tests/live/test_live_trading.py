"""Live trading for real, offline: the executor sends orders through the real ccxt to the exchange
simulator (Binance's signed endpoints on 127.0.0.1), books the exchange's own fills, and its books
reconcile with the exchange's balances to the last digit. Credentials never reach a log."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from conftest import (
    LIVE_ENV,
    SIM_KEY,
    SIM_SECRET,
    Mesh,
    assert_books_are_the_exchanges,
    chaos,
    log_events,
    order_history,
    wait_for,
)


@pytest.fixture(scope="module")
def live_trading(sim, alert_sink, tmp_path_factory):
    mesh = Mesh(Path(tmp_path_factory.mktemp("livetrading")), {
        **LIVE_ENV, "MESH_EXCHANGE_URL": sim, "MESH_ALERT_WEBHOOK_URL": alert_sink.url + "/hook"})
    mesh.start()
    yield mesh
    mesh.stop()


def test_live_orders_are_the_exchanges_fills_and_reconcile(live_trading, sim):
    mesh = live_trading
    wait_for(lambda: mesh.trade_count() >= 4, 120, "live trades")
    trade_ids = [r[0] for r in mesh.query("SELECT trade_id FROM trades")]
    assert all(t.startswith("mt") and t.split("-")[-1].isdigit() for t in trade_ids)  # the exchange's trade ids
    chaos(sim, action="reject_orders", count=1)
    rejected = wait_for(lambda: mesh.query("SELECT reason FROM orders WHERE status='REJECTED'"), 60,
                        "an order the exchange refused")
    assert "insufficient balance" in rejected[0][0]
    chaos(sim, action="partial", count=1)  # the next market order fills half, the rest expires
    [(order_id, qty)] = wait_for(lambda: mesh.query("SELECT order_id, qty FROM orders WHERE status='EXPIRED'"), 60,
                                 "an order the exchange filled in part")
    assert order_history(mesh, order_id) == ["SUBMITTED", "ACCEPTED", "PARTIALLY_FILLED", "EXPIRED"]
    [(filled,)] = mesh.query("SELECT qty FROM trades WHERE order_id = ?", (order_id,))
    assert 0 < Decimal(filled) < Decimal(qty)
    mesh.quiesce()
    assert_books_are_the_exchanges(mesh, sim)
    logs = "".join(p.read_text(errors="replace") for p in mesh.settings.log_dir.glob("*.log"))
    assert SIM_KEY not in logs and SIM_SECRET not in logs
    mesh.ctl("restart", "executor")
    wait_for(lambda: len(log_events(mesh, "reconciled")) >= 2, 30,
             "the restarted executor to reconcile with the exchange again")
    assert mesh.ctl("start", "feed")


def next_unanswered(mesh: Mesh, seen: int) -> str:
    """The id of the next order whose answer the executor did not get."""
    events = wait_for(lambda: log_events(mesh, "live_order_unanswered")[seen:], 120, "an order without an answer")
    return events[0]["order_id"]


def test_an_order_whose_answer_is_lost_is_found_by_its_client_id(live_trading, sim):
    """Binance's -1007 (execution status unknown): the order is looked up by its client id and booked
    from the exchange's own report, once."""
    mesh = live_trading
    seen = len(log_events(mesh, "live_order_unanswered"))
    chaos(sim, action="order_timeout", count=1)
    order_id = next_unanswered(mesh, seen)
    wait_for(lambda: order_history(mesh, order_id)[-1:] == ["FILLED"], 30, "the lost answer found")
    assert order_history(mesh, order_id) == ["SUBMITTED", "ACCEPTED", "FILLED"]
    trades = mesh.query("SELECT trade_id FROM trades WHERE order_id = ?", (order_id,))
    assert len(trades) == 1 and trades[0][0].split("-")[-1].isdigit()


def test_the_exchange_going_away_mid_order(live_trading, sim, alert_sink):
    """The exchange takes an order and then answers nothing for 12 s, across an executor restart: the
    executor refuses new orders meanwhile, alerts, and ends with the order booked once."""
    mesh = live_trading
    seen = len(log_events(mesh, "live_order_unanswered"))
    chaos(sim, action="vanish", seconds=12)
    order_id = next_unanswered(mesh, seen)
    mesh.ctl("restart", "executor")
    wait_for(lambda: order_history(mesh, order_id)[-1:] == ["FILLED"], 60, "the order found after the outage")
    assert order_history(mesh, order_id) == ["SUBMITTED", "ACCEPTED", "FILLED"]
    assert len(mesh.query("SELECT trade_id FROM trades WHERE order_id = ?", (order_id,))) == 1
    assert log_events(mesh, "live_orders_restored")
    wait_for(lambda: any("Exchange not answering" in body.get("title", "") for _, body in alert_sink.received),
             10, "an alert that the exchange does not answer")


def test_an_order_lost_on_the_way_in_is_rejected(live_trading, sim):
    """The exchange goes away before the order reaches it: once its recvWindow has passed the order can
    never arrive, so it ends REJECTED, and nothing was booked."""
    mesh = live_trading
    seen = len(log_events(mesh, "live_order_unanswered"))
    chaos(sim, action="vanish", seconds=3, before=True)
    order_id = next_unanswered(mesh, seen)
    wait_for(lambda: order_history(mesh, order_id)[-1:] == ["REJECTED"], 60, "the lost order given up")
    [(reason,)] = mesh.query("SELECT reason FROM orders WHERE order_id = ?", (order_id,))
    assert "never received" in reason
    assert not mesh.query("SELECT trade_id FROM trades WHERE order_id = ?", (order_id,))
    mesh.quiesce()
    assert_books_are_the_exchanges(mesh, sim)
    assert mesh.ctl("start", "feed")
