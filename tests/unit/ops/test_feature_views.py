"""Features for the dashboard: what a strategy worker publishes to a real redis-server and live_features reads
back; and chart overlays, a strategy's price features replayed over candles with the parameters in use."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.candles import bundled_candles

from meshtrader.ops.features import chart_overlays, features_key, features_snapshot, live_features
from meshtrader.persistence.hotstate import HotState
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import load_settings
from meshtrader.services.strategy import StrategyWorker
from meshtrader.strategies import ParameterError, create
from meshtrader.wire.messages import candle_topic
from tools.localmesh import free_port_base

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@pytest.fixture
def settings(tmp_path):
    return load_settings(home=tmp_path / "h", port_base=free_port_base(), strategies=["momentum", "seller_exhaustion"],
                         symbols=SYMBOLS, strategy_params={"seller_exhaustion": {"ema_slow": 60, "z_window": 60}})


@pytest.fixture
def redis_server(settings):
    """A real redis-server on the mesh's socket, as supervisord starts it."""
    settings.prepare_home()
    server = subprocess.Popen([str(Path(sys.executable).parent / "redis-server"), "--port", "0", "--unixsocket",
                               str(settings.redis_socket), "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hot = HotState(settings.effective_redis_url, settings.redis_prefix)
    deadline = time.monotonic() + 10
    while not hot.ping():
        assert time.monotonic() < deadline and server.poll() is None, "redis-server did not start"
        time.sleep(0.05)
    yield hot
    hot.close()
    server.terminate()
    server.wait(10)


def test_live_features_reads_what_a_strategy_worker_published(settings, redis_server):
    worker = StrategyWorker(settings, "momentum")
    worker.publisher("strategy.momentum.pub")  # its signals go out as usual, to no one
    try:
        for symbol in SYMBOLS:
            for candle in bundled_candles(symbol, 300):
                worker.on_market(candle_topic(symbol, "1m"), candle)
        worker.hot.flush()
        assert redis_server.get(features_key("momentum")) is None, "features are not written on the market path"
        worker.publish_features()  # the timer's call
        worker.hot.flush()
        live = live_features(redis_server, settings)
        assert live == {"strategies": {"momentum": features_snapshot(worker.instances, worker.last_bar),
                                       "seller_exhaustion": {}}}
        btc = live["strategies"]["momentum"]["BTCUSDT"]
        assert btc["bar_time"] == bundled_candles("BTCUSDT", 300)[-1].open_time
        assert set(btc["values"]) == {"sma_fast", "sma_slow", "rsi"} and sorted(btc["prices"]) == ["sma_fast", "sma_slow"]
        redis_server.redis.delete(settings.redis_prefix + features_key("momentum"))
        worker.publish_features()  # no bar since: nothing to write
        worker.hot.flush()
        assert redis_server.get(features_key("momentum")) is None
    finally:
        worker.pub.close()
        worker.hot.close()
        worker.ctx.term()


def test_a_snapshot_has_the_symbols_with_a_bar_and_names_their_prices():
    candles = bundled_candles("BTCUSDT", 100)
    instances = {s: create("bollinger", s) for s in SYMBOLS}
    for candle in candles:
        instances["BTCUSDT"].decide(candle)
    snapshot = features_snapshot(instances, {"BTCUSDT": candles[-1].open_time, "ETHUSDT": -1})
    assert snapshot == {"BTCUSDT": {"bar_time": candles[-1].open_time, "values": instances["BTCUSDT"].features(),
                                    "prices": ["band_upper", "band_middle", "band_lower"]}}


def test_chart_overlays_are_the_price_features_at_each_candles_time(settings):
    candles = bundled_candles("ETHUSDT", 400)
    overlays = chart_overlays(settings, "ETHUSDT", "momentum", candles)
    assert overlays["strategy"] == "momentum" and overlays["params"]["slow"] == 20 and overlays["warmup"] == 21
    assert set(overlays["series"]) == {"sma_fast", "sma_slow"}
    reference = create("momentum", "ETHUSDT")
    expected = []
    for candle in candles:
        reference.decide(candle)
        if reference.features():
            expected.append({"time": candle.open_time // 1000, "value": reference.features()["sma_slow"]})
    assert overlays["series"]["sma_slow"] == expected
    assert [p["time"] for p in expected] == [c.open_time // 1000 for c in candles[19:]]  # from the 20th bar on


def test_chart_overlays_draw_a_held_seller_exhaustion_position_only_while_it_is_held(settings):
    keen = {"ema_fast": 20, "ema_slow": 60, "z_window": 60, "atr_window": 20, "fib_swing_lookback": 20,
            "vol_z": 1.0, "tr_z": 0.5, "cloc_min": 0.5, "max_hold": 30}
    settings = settings.model_copy(update={"strategy_params": {"seller_exhaustion": keen}})
    candles = bundled_candles("BTCUSDT", 1500)
    series = chart_overlays(settings, "BTCUSDT", "seller_exhaustion", candles)["series"]
    times = {c.open_time // 1000 for c in candles}
    assert len(series["ema_slow"]) == len(candles) - 59 and {p["time"] for p in series["ema_slow"]} <= times
    held = {p["time"] for p in series["stop"]}
    assert held and len(held) < len(candles) / 2 and held <= times
    assert {p["time"] for p in series["entry"]} == held and {p["time"] for p in series["target"]} <= held
    assert series["rr_target"] == []  # the R:R exit is off by default: not drawn


def test_chart_overlays_use_the_parameters_the_allocator_adopted(settings):
    settings.prepare_home()
    store = Store(settings.store_location)
    candles = bundled_candles("BTCUSDT", 100)
    try:
        store.put_state("params.momentum", {"fast": 3, "slow": 8})
        overlays = chart_overlays(settings, "BTCUSDT", "momentum", candles)
        assert (overlays["params"]["fast"], overlays["params"]["slow"]) == (3, 8)
        assert len(overlays["series"]["sma_slow"]) == len(candles) - 14  # RSI(14) is ready last
        store.put_state("params.momentum", {"fast": 30, "slow": 8})  # invalid: the worker keeps the configured
        assert chart_overlays(settings, "BTCUSDT", "momentum", candles)["params"]["slow"] == 20
    finally:
        store.close()
    with pytest.raises(ParameterError, match="unknown strategy"):
        chart_overlays(settings, "BTCUSDT", "astrology", candles)
