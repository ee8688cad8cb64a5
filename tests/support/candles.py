"""The bundled data's candles, as the feed publishes them."""
from __future__ import annotations

from meshtrader.marketdata.files import find_candle_file, load_bars
from meshtrader.runtime.config import REPO_ROOT
from meshtrader.wire.messages import Candle


def bundled_candles(symbol: str, n: int) -> list[Candle]:
    bars, rejected = load_bars(find_candle_file(REPO_ROOT / "data", symbol))
    assert not rejected
    return [Candle(symbol=symbol, tf="1m", open_time=b.open_time, open=b.open, high=b.high, low=b.low,
                   close=b.close, volume=b.volume, et=b.open_time + 60_000) for b in bars[:n]]
