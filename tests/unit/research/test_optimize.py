"""Walk-forward optimisation."""
from __future__ import annotations

import pytest
from support.candles import bundled_candles

from meshtrader.domain.candles import Bar
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import load_settings


@pytest.fixture(scope="module")
def candle_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("opt") / "candles.db"
    store = Store(path)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        store.insert_candles(bundled_candles(symbol, 3000))
    store.close()
    return str(path)


def test_walk_forward_optimisation_same_in_one_or_two_processes(candle_db):
    from meshtrader.research.optimize import optimize, parameter_sets, split_in_time

    sets = parameter_sets("macd", samples=10, seed=3)
    assert len(sets) == 10 and sets == parameter_sets("macd", samples=10, seed=3)
    assert all(p["fast"] < p["slow"] for p in parameter_sets("sma_cross"))  # invalid combinations left out
    bars = {"BTCUSDT": [Bar(t, 1, 1, 1, 1, 1) for t in range(10)]}
    early, late = split_in_time(bars, 0.7)
    assert len(early["BTCUSDT"]) == 7 and late["BTCUSDT"][0].open_time == 7
    settings = load_settings()
    first = 1_746_316_800_000
    runs = [optimize("macd", None, candle_db, ["BTCUSDT", "ETHUSDT"], settings, first, first + 3000 * 60_000,
                     samples=8, workers=workers) for workers in (1, 2)]
    serial, parallel = (r.summary() for r in runs)
    for noisy in ("seconds", "workers"):
        serial.pop(noisy), parallel.pop(noisy)
    assert serial == parallel
    assert serial["trials"] == 8 and serial["bars_in_sample"] > 2 * serial["bars_out_of_sample"] > 0
    assert serial["adopt"] == (serial["best_out_of_sample"] is not None and serial["best_params"] != serial[
        "live_params"] and (serial["live_out_of_sample"] is None or
                            serial["best_out_of_sample"] > serial["live_out_of_sample"]))
    assert "walk-forward by sharpe" in serial["reason"]
