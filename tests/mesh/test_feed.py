"""The feed process alone, replaying the other bundled series: the raw trade tape (candles built from
trades) and the funding rates."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import zmq

from meshtrader.marketdata.files import find_series_file, load_funding, load_trades
from meshtrader.marketdata.trade_bars import MarketTrade, TradeBars
from meshtrader.runtime.config import BUNDLED_DATA, REPO_ROOT, load_settings
from meshtrader.wire.codec import decode_event
from meshtrader.wire.messages import Candle, FundingRate, Tick
from tools.localmesh import free_port_base


def run_feed(tmp_path, env: dict[str, str], seconds: float, prefixes: list[bytes]) -> list:
    base = free_port_base()
    settings = load_settings(home=tmp_path, port_base=base)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(settings.endpoint("feed.pub"))  # before the feed binds: nothing is missed
    for prefix in prefixes:
        sub.setsockopt(zmq.SUBSCRIBE, prefix)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    feed = subprocess.Popen([sys.executable, "-m", "meshtrader.services.feed"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            env={**clean, "MESH_HOME": str(tmp_path), "MESH_PORT_BASE": str(base),
                                 "MESH_REPLAY_WAIT_S": "0", **env})
    events = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if sub.poll(100):
                events.append(decode_event(*sub.recv_multipart()))
    finally:
        feed.terminate()
        feed.wait(10)
        sub.close(0)
        ctx.term()
    return events


def test_trade_tape_replay_builds_candles_from_trades(tmp_path):
    events = run_feed(tmp_path, {"MESH_REPLAY": "trades", "MESH_REPLAY_SPEED": "30"}, 6,
                      [b"md.tick.", b"md.candle."])
    for symbol in ("BTCUSDT", "ETHUSDT"):
        tape = load_trades(find_series_file(BUNDLED_DATA, symbol, "trades"))
        ticks = [e for e in events if isinstance(e, Tick) and e.symbol == symbol]
        assert [(t.et, t.price, t.qty) for t in ticks] == [tuple(t) for t in tape]
        builder, expected = TradeBars(60_000), []
        for n, (time_ms, price, qty) in enumerate(tape):
            expected += builder.add(MarketTrade(time_ms, price, qty, str(n))) or []
        candles = [e for e in events if isinstance(e, Candle) and e.symbol == symbol]
        assert [(c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in candles] == \
            [tuple(b) for b in expected] and len(candles) >= 9


def test_funding_rates_are_replayed_in_market_time(tmp_path):
    events = run_feed(tmp_path, {"MESH_REPLAY_SPEED": "3000", "MESH_TICKS_PER_CANDLE": "1"}, 4,
                      [b"md.funding.", b"md.candle.1m.BTCUSDT"])
    funding = [e for e in events if isinstance(e, FundingRate) and e.symbol == "BTCUSDT"]
    candles = [e for e in events if isinstance(e, Candle)]
    assert len(funding) >= 3
    first, last = candles[0].open_time, candles[-1].et
    expected = [(t, r) for t, r in load_funding(find_series_file(BUNDLED_DATA, "BTCUSDT", "funding"))
                if first <= t <= last]
    assert [(f.et, f.rate) for f in funding] == expected[:len(funding)]


def test_longer_timeframes_are_resampled_from_the_minute_candles(tmp_path):
    from meshtrader.domain.candles import resample
    from meshtrader.marketdata.files import find_candle_file, load_bars

    events = run_feed(tmp_path, {"MESH_TIMEFRAME": "5m", "MESH_REPLAY_SPEED": "50"}, 4, [b"md.candle.5m.BTCUSDT"])
    candles = [e for e in events if isinstance(e, Candle)]
    assert len(candles) > 20 and all(c.tf == "5m" for c in candles)
    expected = {b.open_time: b for b in resample(load_bars(find_candle_file(BUNDLED_DATA, "BTCUSDT"))[0], 300_000)}
    assert all(b.open_time - a.open_time == 300_000 for a, b in zip(candles, candles[1:], strict=False))
    assert all((c.open, c.high, c.low, c.close, c.volume) == tuple(expected[c.open_time])[1:] for c in candles)
