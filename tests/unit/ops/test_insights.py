"""The dashboard's read side (meshtrader.ops.insights) on a real SQLite store written by the mesh's own
writers: every figure checked against values worked out by hand."""
from __future__ import annotations

import json
import math
import statistics
import time
from decimal import Decimal
from types import SimpleNamespace

import pytest

from meshtrader.domain.regime import RegimeReading
from meshtrader.ops import insights
from meshtrader.persistence import fork_registry
from meshtrader.persistence.fork_registry import ACTIVE, ForkRegistry
from meshtrader.persistence.ledger import Ledger
from meshtrader.persistence.orders import OrderChange, OrderJournal, OrderRow, TradeRow
from meshtrader.persistence.store import Store
from meshtrader.research.backtest import Report
from meshtrader.research.optimize import Optimization
from meshtrader.runtime.config import Settings
from meshtrader.services.allocator import summary
from meshtrader.wire.messages import Candle

T = 1_746_000_000_000  # market time of the first equity record (ms)
MIN = 60_000
PERIODS_PER_YEAR = 365 * 24 * 4  # 15-minute records


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, strategies=["momentum", "macd"], strategy_params={"macd": {"fast": 8}})


@pytest.fixture
def store(settings):
    store = Store(settings.db_path)
    yield store
    store.close()


def trade(journal: OrderJournal, n: int, side: str, fee: str, pnl: str, et: int, strategy: str = "momentum") -> None:
    """One filled order and its trade, as the executor journals them."""
    qty, price = Decimal("0.01"), Decimal("95000")
    order = OrderRow(f"o{n}", f"sig{n}", strategy, "BTCUSDT", side, qty, price, "FILLED", "", et, "0", float(n),
                     "market", None)
    journal.record(OrderChange(order, [], [TradeRow(f"t{n}", f"o{n}", strategy, "BTCUSDT", side, qty, price,
                                                    Decimal(fee), Decimal(pnl), et, "0", float(n), "taker")],
                               et, float(n)))


def report(roi: float, sharpe: float, trades: int) -> dict:
    """A validation's per-strategy figures, in the shape the allocator records them."""
    return summary(Report(strategies=["x"], symbols=["BTCUSDT"], bars=30, trades=trades, roi=roi, sharpe=sharpe,
                          sortino=0.0, max_drawdown=0.031, win_rate=0.5, profit_factor=1.8, exposure=0.4, fees=1.0,
                          start_equity=100000.0, final_equity=100000.0 * (1 + roi), rejected=0))


def validation_fork(registry: ForkRegistry, fork_id: str, created_et: int, reports: dict) -> None:
    registry.register(fork_id, "sqlite", "mesh.db", "validation", "allocator", created_et, 43200,
                      created_et + 43_200_000, writable=False)
    registry.set_status(fork_id, ACTIVE, {"method": "reflink", "bytes": 4096})
    registry.merge_results(fork_id, {"validation": reports, "trigger": "schedule", "triggers": ["schedule"],
                                     "inputs": {"scores": {"momentum": 0.81, "macd": -0.2}, "kelly": {},
                                                "regime": "", "correlations": {}}})


def test_strategy_figures_are_exact_and_net_of_transfers(settings, store):
    ledger, journal = Ledger(store), OrderJournal(store)
    weights = {"momentum": Decimal("0.5"), "macd": Decimal("0.5")}
    ledger.transfer([("momentum", Decimal("1000"), "initial"), ("macd", Decimal("1000"), "initial")], 0, weights, {})
    ledger.performance(T, [("momentum", "1000", "1000", "0", 0), ("macd", "1000", "1000", "0", 0)])
    ledger.performance(T + 15 * MIN, [("momentum", "1100", "1100", "0", 2), ("macd", "1000", "1000", "0", 0)])
    # a rebalance in two steps, the second at the very time of the next record: both count in that period
    ledger.transfer([("macd", Decimal("-300"), "rebalance"), ("momentum", Decimal("300"), "rebalance")],
                    T + 20 * MIN, weights, {})
    ledger.transfer([("macd", Decimal("-200"), "rebalance"), ("momentum", Decimal("200"), "rebalance")],
                    T + 30 * MIN, weights, {})
    ledger.performance(T + 30 * MIN, [("momentum", "1655", "1655", "0", 3), ("macd", "500", "500", "0", 0)])
    ledger.performance(T + 45 * MIN, [("momentum", "1489.5", "1489.5", "0", 4), ("macd", "500", "500", "0", 0)])
    for n, (side, fee, pnl, minute) in enumerate([("buy", "0.5", "0", 5), ("sell", "0.55", "12.34", 10),
                                                  ("buy", "0.1", "0", 20), ("sell", "0.2", "-2.5", 40),
                                                  ("sell", "0", "0.16", 50)]):
        trade(journal, n, side, fee, pnl, T + minute * MIN)
    store.insert_many("allocations", ("event_time", "weights", "reason", "created_at"),
                      [(0, json.dumps({"momentum": "0.5", "macd": "0.5"}), "equal weights", 1.0),
                       (T + 20 * MIN, json.dumps({"momentum": "0.65", "macd": "0.35"}), "validation", 2.0)])
    store.agent_event("allocator", "params_adopted", {"strategy": "momentum", "fork_id": "f1", "params": {}})
    adopted = {"fast": 7, "slow": 30, "rsi_period": 14, "rsi_max": 70.0}
    before = time.time()
    store.put_state("params.momentum", adopted)
    store.agent_event("allocator", "params_adopted", {"strategy": "momentum", "fork_id": "f2", "params": adopted})
    after = time.time()
    store.insert_candles([Candle(symbol="BTCUSDT", tf="1m", open_time=T + 20 * MIN, open=1.0, high=1.0, low=1.0,
                                 close=1.0, volume=1.0, et=T + 21 * MIN)])
    registry = ForkRegistry(store)
    validation_fork(registry, "fork-old", T + 45 * MIN, {"30m": {"momentum": report(0.012, 1.5, 4),
                                                                 "macd": report(0.0, 0.0, 0)},
                                                         "60m": {"momentum": report(0.02, 1.1, 6),
                                                                 "macd": report(0.0, 0.0, 0)}})
    validation_fork(registry, "fork-new", T + 50 * MIN, {"30m": {"macd": report(-0.01, -0.4, 2)}})

    found = insights.strategy_insights(settings)["strategies"]

    momentum, macd = found["momentum"], found["macd"]
    assert {k: momentum[k] for k in ("trades", "closed_trades", "win_rate", "realized_pnl", "fees")} == {
        "trades": 5, "closed_trades": 3, "win_rate": round(2 / 3, 6), "realized_pnl": "10.00", "fees": "1.35"}
    # returns net of the 500 moved in during (T+15, T+30]: 1100/1000, (1655-500)/1100, 1489.5/1655
    returns = [0.1, 0.05, -0.1]
    sharpe = statistics.fmean(returns) / statistics.pstdev(returns) * math.sqrt(PERIODS_PER_YEAR)
    assert momentum["sharpe"] == pytest.approx(sharpe, abs=1e-6)
    assert momentum["return_pct"] == pytest.approx((1.1 * 1.05 * 0.9 - 1) * 100, abs=1e-6)
    assert momentum["max_drawdown_pct"] == pytest.approx(10.0, abs=1e-6)  # 1.155 down to 1.0395
    # macd gave 500 away and made nothing: no return, no risk, no Sharpe to speak of
    assert (macd["return_pct"], macd["max_drawdown_pct"], macd["sharpe"]) == (0.0, 0.0, None)
    assert (macd["trades"], macd["closed_trades"], macd["win_rate"], macd["realized_pnl"], macd["fees"]) == (
        0, 0, None, "0", "0")
    assert momentum["allocation_history"] == [{"time": 0, "weight_pct": 50.0}, {"time": T + 20 * MIN,
                                                                               "weight_pct": 65.0}]
    assert momentum["params"] == adopted and momentum["params_source"] == "adopted"
    assert before <= momentum["params_adopted_at"] <= after
    assert macd["params"] == {"fast": 8, "slow": 26, "signal": 9}  # configured, with the class's defaults
    assert (macd["params_source"], macd["params_adopted_at"]) == ("configured", None)

    # momentum: the newest validation that covered it, its shortest window (30 minutes to the fork's
    # market time), clipped to the first stored candle; live over the records whose periods end in it
    validation = momentum["validation"]
    assert {k: validation[k] for k in ("fork_id", "window_min", "from_et", "to_et")} == {
        "fork_id": "fork-old", "window_min": 30.0, "from_et": T + 20 * MIN, "to_et": T + 45 * MIN}
    assert validation["backtest"] == {"return_pct": pytest.approx(1.2), "trades": 4, "sharpe": 1.5, "days": 0,
                                      "max_drawdown_pct": pytest.approx(3.1), "win_rate": 0.5, "profit_factor": 1.8}
    live = validation["live"]
    assert live["return_pct"] == pytest.approx((1.05 * 0.9 - 1) * 100, abs=1e-6)
    assert live["sharpe"] == pytest.approx(statistics.fmean([0.05, -0.1]) / statistics.pstdev([0.05, -0.1])
                                           * math.sqrt(PERIODS_PER_YEAR), abs=1e-6)
    assert live["max_drawdown_pct"] == pytest.approx(10.0, abs=1e-6)
    assert (live["trades"], live["from_et"], live["to_et"]) == (1, T + 15 * MIN, T + 45 * MIN)  # T+20: not after
    assert macd["validation"]["fork_id"] == "fork-new"
    assert macd["validation"]["backtest"]["return_pct"] == pytest.approx(-1.0)
    json.dumps(found)  # ready for the wire as it is


def test_without_a_store_or_with_an_empty_one_everything_is_empty(settings):
    assert insights.strategy_insights(settings) == {"strategies": {}}
    assert insights.fork_timeline(settings) == {"forks": [], "by_purpose": {}}
    assert insights.narratives(settings) == []
    regimes = insights.regime_history(settings)
    assert (regimes["current"], regimes["history"], regimes["symbols"]["BTCUSDT"]["volatility"]["value"]) == (None, [], None)
    assert regimes["symbols"]["BTCUSDT"]["trend_strength"]["trend_from"] == 25.0  # the boundaries show without data
    Store(settings.db_path).close()
    empty = insights.strategy_insights(settings)["strategies"]
    assert list(empty) == ["momentum", "macd"]
    assert empty["momentum"] == {
        "trades": 0, "closed_trades": 0, "win_rate": None, "realized_pnl": "0", "fees": "0", "return_pct": None,
        "sharpe": None, "max_drawdown_pct": None, "allocation_history": [],
        "params": {"fast": 5, "slow": 20, "rsi_period": 14, "rsi_max": 70.0}, "params_source": "configured",
        "params_adopted_at": None, "validation": None}


def test_fork_timeline_says_what_each_fork_produced_and_totals_time_per_purpose(settings, store, monkeypatch):
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(fork_registry, "time", SimpleNamespace(time=lambda: clock.now))
    monkeypatch.setattr(insights, "time", SimpleNamespace(time=lambda: 1100.0))
    registry = ForkRegistry(store)
    validation_fork(registry, "v", T, {"10080m": {"momentum": report(0.01, 0.8, 4)}})
    clock.now = 1001.0
    registry.register("w", "sqlite", "mesh.db", "whatif", "allocator", T, 21600, T + 21_600_000, writable=False)
    registry.set_status("w", ACTIVE, {})
    registry.merge_results("w", {"whatif": {
        "scenarios": {}, "chosen": "proposed",
        "outcome": {"proposed": {"roi": 0.005, "sharpe": 1.2, "sortino": 1.5, "days": 7, "max_drawdown": 0.01,
                                 "trades": 8},
                    "current": {"roi": -0.001, "sharpe": None, "sortino": None, "days": 1, "max_drawdown": 0.02,
                                "trades": 8}}},
        "validation_fork": "v"})
    registry.keep("w", T + 604_800_000, 604800)
    registry.merge_results("w", {"interesting": "it moved a strategy's allocation by 10 points or more"})
    clock.now = 1002.0
    registry.register("o", "sqlite", "mesh.db", "optimization", "allocator", T, 86400, T + 86_400_000, writable=False)
    registry.set_status("o", ACTIVE, {})
    registry.merge_results("o", {"optimization": Optimization(
        strategy="momentum", objective="sharpe", trials=24, bars_in_sample=700, bars_out_of_sample=300,
        best_params={"fast": 7, "slow": 30}, best_in_sample=2.0, best_out_of_sample=1.234, live_params={},
        live_out_of_sample=None, adopt=True, reason="", seconds=1.0, workers=2, top=[]).summary(),
        "validation_forks": ["v"]})
    clock.now = 1003.0
    registry.register("i", "sqlite", "mesh.db", "incident", "risk", T, 604800, T + 604_800_000, writable=True,
                      kept=True)
    registry.set_status("i", ACTIVE, {})
    registry.merge_results("i", {"incident": "trading halted: daily loss 5.1%"})
    clock.now = 1004.0
    registry.register("f", "sqlite", "mesh.db", "validation", "allocator", T, 43200, T + 43_200_000, writable=False)
    registry.set_status("f", "destroyed", {"error": "disk full"})  # the backend failed: never made
    clock.now = 1012.5
    registry.release("v", "allocator")
    registry.destroyed("v")
    clock.now = 1030.0
    registry.release("o", "allocator")
    registry.destroyed("o")

    timeline = insights.fork_timeline(settings)

    forks = {f["fork_id"]: f for f in timeline["forks"]}
    assert [f["fork_id"] for f in timeline["forks"]] == ["f", "i", "o", "w", "v"]
    assert {k: (f["status"], f["lived_s"], f["kept"]) for k, f in forks.items()} == {
        "f": ("destroyed", None, False), "i": ("active", 97.0, True), "o": ("destroyed", 28.0, False),
        "w": ("active", 99.0, True), "v": ("destroyed", 12.5, False)}
    assert {k: f["produced"] for k, f in forks.items()} == {
        "v": "validation (schedule) over 10080m: scores momentum 0.81, macd -0.20",
        "w": "what-if chose proposed: proposed Sharpe 1.20 (7 days) ROI 0.50%, current Sharpe n/a (1 day) ROI -0.10%; "
             "kept: it moved a strategy's allocation by 10 points or more",
        "o": "momentum adopted fast=7, slow=30 (sharpe out of sample 1.234 vs live n/a, 24 sets)",
        "i": "incident: trading halted: daily loss 5.1%",
        "f": "failed: disk full"}
    assert {k: forks["v"][k] for k in ("purpose", "requester", "backend", "created_at", "created_et",
                                       "destroyed_at", "ttl_s", "expires_et")} == {
        "purpose": "validation", "requester": "allocator", "backend": "sqlite", "created_at": 1000.0,
        "created_et": T, "destroyed_at": 1012.5, "ttl_s": 43200, "expires_et": T + 43_200_000}
    assert timeline["by_purpose"] == {
        "incident": {"count": 1, "active": 1, "total_s": 97.0, "mean_s": 97.0},
        "optimization": {"count": 1, "active": 0, "total_s": 28.0, "mean_s": 28.0},
        "validation": {"count": 2, "active": 0, "total_s": 12.5, "mean_s": 12.5},
        "whatif": {"count": 1, "active": 1, "total_s": 99.0, "mean_s": 99.0}}
    assert [f["fork_id"] for f in insights.fork_timeline(settings, limit=2)["forks"]] == ["f", "i"]
    assert insights.fork_timeline(settings, limit=2)["by_purpose"] == timeline["by_purpose"]  # over every fork


def test_regime_history_oldest_first_with_the_classifiers_boundaries(settings, store):
    readings = [RegimeReading("trending_bull", 31.25, 0.0042, 0.00061, 0.82, 1.3),
                RegimeReading("high_volatility_range", 18.5, -0.0001, 0.00093, None, 0.9)]
    store.insert_many("market_regimes", ("event_time", "regime", "metrics", "created_at"),
                      [(T + n * MIN, r.regime, json.dumps(r.metrics()), 1.0) for n, r in enumerate(readings)])

    regimes = insights.regime_history(settings)

    assert regimes["market_symbol"] == "BTCUSDT"
    assert regimes["history"] == [{"time": T, "regime": "trending_bull", "metrics": readings[0].metrics()},
                                  {"time": T + MIN, "regime": "high_volatility_range",
                                   "metrics": readings[1].metrics()}]
    assert regimes["current"] == regimes["history"][-1]
    assert regimes["symbols"]["BTCUSDT"] == {  # no live reading: the one that made the market's regime
        "regime": "high_volatility_range", "reading": "high_volatility_range", "as_of": T + MIN,
        "volatility": {"value": 0.00093, "high_from": 0.0008},
        "trend_strength": {"value": 18.5, "trend_from": 25.0, "trend_until": 20.0},
        "slope": -0.0001, "correlation": None}
    assert regimes["symbols"]["ETHUSDT"]["regime"] is None  # nothing read for it yet
    # the allocator's latest readings per symbol (hot state), when there are some, are what the gauges show
    live = {"ETHUSDT": {"regime": "trending_bear", "reading": "trending_bear", "metrics": readings[0].metrics(),
                        "event_time": T + 9 * MIN}}
    eth = insights.regime_history(settings, live=live)["symbols"]["ETHUSDT"]
    assert (eth["as_of"], eth["regime"], eth["trend_strength"]["value"]) == (T + 9 * MIN, "trending_bear", 31.25)
    assert [r["regime"] for r in insights.regime_history(settings, limit=1)["history"]] == ["high_volatility_range"]


def test_narratives_newest_first_and_by_kind(settings, store):
    store.insert_many("pr_events", ("kind", "title", "body", "event_time", "created_at"),
                      [("first_trade", "First trade", "momentum bought", T, 1.0),
                       ("big_win", "momentum won 1200.00", "Closing ...", T + MIN, 2.0),
                       ("allocation", "Capital reallocated", "momentum 65.0% (+15.0)", T + 2 * MIN, 3.0)])

    assert [n["title"] for n in insights.narratives(settings)] == [
        "Capital reallocated", "momentum won 1200.00", "First trade"]
    assert insights.narratives(settings, kind="big_win") == [
        {"kind": "big_win", "title": "momentum won 1200.00", "body": "Closing ...", "event_time": T + MIN}]
    assert [n["kind"] for n in insights.narratives(settings, limit=2)] == ["allocation", "big_win"]


def test_a_transfer_at_the_market_time_of_an_equity_record_counts_where_it_happened():
    # the record at 15:00 was written before the rebalance at 15:00: the transfer belongs to the next period
    equity = [((T, 1.0), Decimal("1000")), ((T + 15 * MIN, 2.0), Decimal("1000")), ((T + 30 * MIN, 4.0), Decimal("1510"))]
    transfers = [((T + 15 * MIN, 3.0), Decimal("500"))]
    returns = [round(p.ret, 6) for p in insights.periods(equity, transfers)]
    assert returns == [0.0, 0.01]  # no drawdown at 15:00, 1% after it
