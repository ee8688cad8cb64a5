"""USD-M futures in the paper mesh, end to end: a short opened and closed with the books exact, an executor
restart with the short open that keeps it, a funding settlement that goes by while the executor is down booked
as money when it is back, and a leveraged long sliding toward liquidation that the risk guard's margin rule
closes first."""
from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path

import pytest
from conftest import Mesh, wait_for, wait_settled
from support.strategy_files import SCRIPTED

from meshtrader.domain.portfolio import FUNDING, Portfolio

MIN = 60_000
T0 = 1_746_406_800_000  # 2025-05-05 01:00 UTC
SETTLEMENT = T0 + 20 * MIN  # the close of bar 19: 14 bars after both positions open, 40 before the slide
RATE = D("0.0005")  # longs pay, shorts receive


def synthetic_month(directory: Path) -> None:
    """Flat at 100000 for 60 bars, a slide to 80600, where a 5x long's margin ratio is over the risk guard's
    reduce level (80645), then 80380: over its close level (80402), short of its liquidation price (80321.3)."""
    prices = [100_000.0] * 60 + [100_000.0 - 485.0 * i for i in range(1, 41)] + [80_600.0] * 6 + [80_380.0] * 20
    rows = ["timestamp_ms,open,high,low,close,volume"]
    rows += [f"{T0 + i * MIN},{p},{p},{p},{p},50.0" for i, p in enumerate(prices)]
    (directory / "synthetic_BTCUSDT_1m.csv").write_text("\n".join(rows) + "\n")
    (directory / "synthetic_BTCUSDT_funding_.csv").write_text(f"timestamp_ms,funding_rate\n{SETTLEMENT},{RATE}\n")


@pytest.fixture(scope="module")
def futures_mesh(tmp_path_factory):
    home = Path(tmp_path_factory.mktemp("futures"))
    data = home / "data"
    data.mkdir()
    synthetic_month(data)
    (home / "scripted.py").write_text(SCRIPTED)
    params = {"scripted_short": {"enter_at_ms": T0 + 5 * MIN, "leave_at_ms": T0 + 115 * MIN},
              "scripted_long": {"enter_at_ms": T0 + 5 * MIN}}
    mesh = Mesh(home, {
        "MESH_MARKET": "usdm", "MESH_DATA": str(data), "MESH_SYMBOLS": "BTCUSDT",
        "MESH_STRATEGY_FILES": str(home / "scripted.py"), "MESH_STRATEGIES": "scripted_short,scripted_long",
        "MESH_STRATEGY_PARAMS": json.dumps(params), "MESH_LEVERAGE": json.dumps({"scripted_long": 5}),
        "MESH_REPLAY_SPEED": "20", "MESH_VALIDATION_EVERY_MIN": "100000000", "MESH_FILL_MODEL": "instant"})
    mesh.start()
    yield mesh
    mesh.stop()


def positions(accounts: list[dict]) -> dict[str, list[tuple[str, str]]]:
    return {a["strategy"]: [(p["symbol"], p["qty"]) for p in a["positions"]] for a in accounts}


def books(accounts: list[dict]) -> list[tuple]:
    """Wallet, margin and positions (signed size, entry) per strategy: the books, not the marks."""
    return [(a["strategy"], a["cash"], a["margin"], [(p["symbol"], p["qty"], p["avg_price"]) for p in a["positions"]])
            for a in accounts]


def rebuilt(mesh: Mesh) -> Portfolio:
    store = mesh.store()
    try:
        return Portfolio.rebuild(store.ledger(), store.trades(), market="usdm",
                                 leverage={"scripted_long": D(5)})
    finally:
        store.close()


def test_shorts_funding_restart_and_the_margin_rule(futures_mesh):
    mesh = futures_mesh
    # both positions open (a trade is stored before its fill is published); the feed stops before the settlement
    wait_for(lambda: mesh.trade_count() >= 2, 60, "both positions open", interval=0.02)
    assert "stopped" in mesh.ctl("stop", "feed")
    before = wait_settled(lambda: mesh.status()["accounts"], 30, "the books to settle with the feed stopped")
    opened = positions(before)
    short_qty = D(opened["scripted_short"][0][1])
    assert short_qty < 0 and D(opened["scripted_long"][0][1]) > 0
    assert not mesh.query("SELECT 1 FROM ledger WHERE kind = ?", (FUNDING,)), "the feed stopped after the settlement"

    # the executor restarts with the short open: it keeps it, and its margin and entry
    assert "started" in mesh.ctl("restart", "executor")
    wait_for(lambda: books(mesh.status()["accounts"]) == books(before), 30,
             "the restarted executor's books to equal those before")
    for account in before:  # the futures form of equity: the wallet plus the positions' unrealized PnL
        unrealized = sum((D(p["qty"]) * D(p["last_price"]) - D(p["cost"]) for p in account["positions"]), D(0))
        assert D(account["equity"]) == D(account["cash"]) + unrealized
        assert all(D(p["unrealized_pnl"]) == D(p["qty"]) * D(p["last_price"]) - D(p["cost"]) and p["liquidation_price"]
                   for p in account["positions"])

    # the settlement goes by while the executor is down: the feed records it, the executor books it when back
    assert "stopped" in mesh.ctl("stop", "executor")
    assert "started" in mesh.ctl("start", "feed")
    wait_for(lambda: mesh.query("SELECT 1 FROM funding_settlements"), 60, "the settlement recorded", interval=0.02)
    assert "stopped" in mesh.ctl("stop", "feed")  # within the 40 flat bars before the slide
    assert not mesh.query("SELECT 1 FROM ledger WHERE kind = ?", (FUNDING,))
    assert "started" in mesh.ctl("start", "executor")
    # the short receives qty x mark x rate, the long pays: a ledger entry of its own each, once
    funding = wait_for(lambda: mesh.query("SELECT strategy, amount, ref FROM ledger WHERE kind = ?", (FUNDING,)), 60,
                       "the funding settlement booked")
    amounts = {strategy: D(amount) for strategy, amount, _ in funding}
    assert len(funding) == 2 and amounts["scripted_short"] == -short_qty * D("100000") * RATE > 0
    assert amounts["scripted_long"] < 0
    assert "started" in mesh.ctl("start", "feed")

    # the slide: the risk guard's margin rule closes the 5x long before the exchange would liquidate it
    acted = wait_for(lambda: len(rows := mesh.query("SELECT reason FROM risk_events WHERE rule = 'margin_ratio' "
                                                    "ORDER BY id")) >= 2 and rows, 120, "the margin-ratio rule to act")
    assert "only reducing orders" in acted[0][0] and "closed before liquidation" in acted[1][0]
    closes = wait_for(lambda: mesh.query("SELECT t.side, t.liquidity, o.signal_id FROM trades t JOIN orders o "
                                         "ON o.order_id = t.order_id WHERE t.strategy = 'scripted_long' "
                                         "AND t.side = 'sell'"), 60, "the long closed")
    assert closes[0][1] != "liquidation" and closes[0][2].startswith("close-all:")
    wait_for(lambda: not positions(mesh.status()["accounts"])["scripted_short"], 120, "the short covered")
    assert not mesh.query("SELECT 1 FROM trades WHERE liquidity = 'liquidation'")

    # the books: rebuilt from the store equal the published account, wallet = transfers + PnL - fees + funding
    mesh.quiesce()
    portfolio, published = rebuilt(mesh), {a["strategy"]: a for a in mesh.status()["accounts"]}
    assert mesh.status()["market"] == "usdm"
    for name, account in portfolio.accounts.items():
        assert D(published[name]["cash"]) == account.cash == D(published[name]["equity"])  # all flat again
        trades = mesh.query("SELECT realized_pnl, fee FROM trades WHERE strategy = ?", (name,))
        transfers = mesh.query("SELECT amount FROM ledger WHERE strategy = ? AND kind = 'transfer'", (name,))
        assert account.cash == (sum((D(a) for (a,) in transfers), D(0)) + sum((D(r) - D(f) for r, f in trades), D(0))
                                + amounts[name])
