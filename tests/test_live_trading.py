"""Live trading for real, offline: the executor sends orders through the real ccxt to the exchange
simulator (Binance's signed endpoints on 127.0.0.1), books the exchange's own fills, and its books
reconcile with the exchange's balances to the last digit. Credentials never reach a log."""
from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from conftest import SIM_KEY, SIM_SECRET, Mesh, chaos, wait_for

from core.config import LIVE_CONFIRMATION, ConfigError, load_settings
from core.portfolio import Portfolio


def test_live_mode_needs_consent_and_live_data():
    with pytest.raises(ConfigError, match=LIVE_CONFIRMATION):
        load_settings(mode="live", feed="live")
    with pytest.raises(ConfigError, match="MESH_FEED=live"):
        load_settings(mode="live", live_confirm=LIVE_CONFIRMATION)
    assert load_settings(mode="live", feed="live", live_confirm=LIVE_CONFIRMATION).live_sandbox


@pytest.fixture(scope="module")
def live_trading(sim, tmp_path_factory):
    mesh = Mesh(Path(tmp_path_factory.mktemp("livetrading")), {
        "MESH_MODE": "live", "MESH_LIVE_CONFIRM": LIVE_CONFIRMATION, "MESH_FEED": "live", "MESH_EXCHANGE_URL": sim,
        "BINANCE_API_KEY": SIM_KEY, "BINANCE_API_SECRET": SIM_SECRET, "MESH_FEED_BACKOFF_S": "0.2",
        "MESH_VALIDATION_EVERY_MIN": "100000000"})
    mesh.start()
    yield mesh
    mesh.stop()


def exchange_balances(sim: str) -> dict[str, Decimal]:
    [balances] = httpx.get(f"{sim}/admin/accounts", timeout=5).json().values()
    return {asset: Decimal(amount) for asset, amount in balances.items()}


def test_live_orders_are_the_exchanges_fills_and_reconcile(live_trading, sim):
    mesh = live_trading
    wait_for(lambda: mesh.trade_count() >= 4, 120, "live trades")
    trade_ids = [r[0] for r in mesh.query("SELECT trade_id FROM trades")]
    assert all(t.startswith("mt") and t.split("-")[-1].isdigit() for t in trade_ids)  # the exchange's trade ids
    chaos(sim, action="reject_orders", count=1)
    rejected = wait_for(lambda: mesh.query("SELECT reason FROM orders WHERE status='REJECTED'"), 60,
                        "an order the exchange refused")
    assert "insufficient balance" in rejected[0][0]
    mesh.quiesce()
    store = mesh.store()
    try:
        books = Portfolio.rebuild(store.ledger(), store.trades())
    finally:
        store.close()
    held = exchange_balances(sim)
    assert held["USDT"] == books.cash()  # fees and prices as the exchange reported them: exact
    for asset in ("BTC", "ETH"):
        booked = sum((a.positions[f"{asset}USDT"].qty for a in books.accounts.values()
                      if f"{asset}USDT" in a.positions), Decimal(0))
        assert held.get(asset, Decimal(0)) == booked, asset
    logs = "".join(p.read_text(errors="replace") for p in mesh.settings.log_dir.glob("*.log"))
    assert SIM_KEY not in logs and SIM_SECRET not in logs
    mesh.ctl("restart", "executor")
    wait_for(lambda: (mesh.settings.log_dir / "executor.log").read_text().count('"event": "reconciled"') >= 2, 30,
             "the restarted executor to reconcile with the exchange again")
    assert mesh.ctl("start", "feed")
