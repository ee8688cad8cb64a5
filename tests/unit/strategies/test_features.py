"""Strategy features: the inputs of each strategy's decisions, on the bundled candles; read only when asked,
so they never change a decision."""
from __future__ import annotations

import math

import pytest
from support.candles import bundled_candles

from meshtrader.marketdata.files import find_series_file, load_funding
from meshtrader.runtime.config import REPO_ROOT
from meshtrader.strategies import Strategy, builtin, create
from meshtrader.wire.messages import Candle, FundingRate

STRATEGIES = [name for name in builtin() if name != "bench"]  # bench decides on ticks: it has no features
# seller exhaustion, quicker to warm up and keener to trade, so positions come within the candles below
KEEN_SELLER = {"ema_fast": 20, "ema_slow": 60, "z_window": 60, "atr_window": 20, "fib_swing_lookback": 20,
               "vol_z": 1.0, "tr_z": 0.5, "cloc_min": 0.5, "max_hold": 30, "use_traditional_tp": True}


@pytest.fixture(scope="module")
def candles() -> list[Candle]:
    return bundled_candles("BTCUSDT", 3000)


@pytest.fixture(scope="module")
def funding(candles) -> list[FundingRate]:
    path = find_series_file(REPO_ROOT / "data", "BTCUSDT", "funding")
    first, last = candles[0].open_time, candles[-1].et
    return [FundingRate(symbol="BTCUSDT", rate=rate, et=t) for t, rate in load_funding(path) if first <= t <= last]


def replay(strategy: Strategy, candles: list[Candle], funding: list[FundingRate], look: bool) -> list:
    """Each bar's decision, funding delivered after the candle it falls in, as the backtester does; with
    `look`, features read after every bar."""
    decisions, settlements = [], iter(funding)
    settlement = next(settlements, None)
    for candle in candles:
        decisions.append(strategy.decide(candle))
        while settlement is not None and settlement.et <= candle.et:
            strategy.on_funding(settlement)
            settlement = next(settlements, None)
        if look:
            strategy.features()
    return decisions


@pytest.mark.parametrize("name", STRATEGIES)
def test_features_are_finite_floats_and_price_features_are_near_the_price(name, candles, funding):
    strategy = create(name, "BTCUSDT")
    assert strategy.features() == {}, "nothing before warm-up"
    replay(strategy, candles, funding, look=False)
    features = strategy.features()
    assert features and all(type(v) is float and math.isfinite(v) for v in features.values()), features
    prices = {n: v for n, v in features.items() if n in strategy.price_features}
    recent = candles[-1000:]
    low, high = min(c.low for c in recent), max(c.high for c in recent)
    assert all(0.97 * low <= v <= 1.03 * high for v in prices.values()), (prices, low, high)
    assert bool(prices) == (name not in ("macd", "funding_drift"))


def test_features_never_change_a_decision(candles, funding):
    for name in STRATEGIES:
        params = KEEN_SELLER if name == "seller_exhaustion" else None
        runs = [replay(create(name, "BTCUSDT", params), candles, funding, look) for look in (False, True)]
        assert runs[0] == runs[1], name
        assert any(runs[0]), f"{name} made no decision on these candles"


def test_indicator_values_are_the_ones_the_decisions_read(candles):
    stochastic, momentum = create("stochastic", "BTCUSDT"), create("momentum", "BTCUSDT")
    for candle in candles[:100]:
        stochastic.decide(candle)
        momentum.decide(candle)
    window = candles[86:100]
    high, low = max(c.high for c in window), min(c.low for c in window)
    k = (candles[99].close - low) / (high - low) * 100
    features = stochastic.features()
    assert (features["channel_high"], features["channel_low"]) == (high, low)
    assert features["k"] == pytest.approx(k, abs=1e-9)
    assert momentum.features()["sma_slow"] == pytest.approx(sum(c.close for c in candles[80:100]) / 20)


def test_seller_exhaustion_shows_a_held_positions_stop_fibonacci_levels_and_target(candles):
    strategy = create("seller_exhaustion", "BTCUSDT", KEEN_SELLER)
    held = flat = 0
    for candle in candles:
        strategy.decide(candle)
        features = strategy.features()
        if strategy.trade is None:
            flat += 1
            assert not {"entry", "stop", "target", "rr_target", "fib_0.618"} & set(features)
        elif strategy.trade["fib"] is not None:
            held += 1
            ladder = [features[f"fib_{level}"] for level in (0.236, 0.382, 0.5, 0.618, 0.786)]
            assert strategy.trade["low"] < ladder[0] < ladder[-1] < strategy.trade["swing"]
            assert ladder == sorted(ladder)
            assert features["stop"] < features["entry"] < features["rr_target"]
            assert features["target"] == pytest.approx(features["fib_0.618"])  # fib_target_level's
            assert {"entry", "stop", "target", "rr_target", *(f"fib_{level}" for level in (0.236, 0.5))} \
                <= strategy.price_features
    assert held > 10 and flat > 10


def test_the_ensemble_shows_its_members_features_under_their_names(candles):
    ensemble = create("ensemble", "BTCUSDT", {"members": {"momentum": 1.0, "bollinger": 2.0}})
    momentum, bollinger = create("momentum", "BTCUSDT"), create("bollinger", "BTCUSDT")
    for candle in candles[:200]:
        for strategy in (ensemble, momentum, bollinger):
            strategy.decide(candle)
    expected = {**{f"momentum.{n}": v for n, v in momentum.features().items()},
                **{f"bollinger.{n}": v for n, v in bollinger.features().items()}}
    assert ensemble.features() == expected and "momentum.rsi" in expected
    assert ensemble.price_features == {"momentum.sma_fast", "momentum.sma_slow", "bollinger.band_upper",
                                       "bollinger.band_middle", "bollinger.band_lower"}
