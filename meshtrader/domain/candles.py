"""Candles as the domain knows them: timeframes, bars, validation, resampling, the intrabar tick path
and candles built from trades. Pure: no files, no sockets."""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

# Under a minute, candles come from trades only (the live feed's trade stream, MESH_REPLAY=trades): the
# bundled candle files and most exchanges' kline streams start at 1m.
TIMEFRAMES_MS = {"15s": 15_000, "30s": 30_000, "1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000,
                 "4h": 14_400_000, "1d": 86_400_000}


def timeframe_ms(tf: str) -> int:
    try:
        return TIMEFRAMES_MS[tf]
    except KeyError:
        raise ValueError(f"unknown timeframe {tf!r}; known: {', '.join(TIMEFRAMES_MS)}") from None


class Bar(NamedTuple):
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


def candle_problem(bar: Bar, previous_open_time: int | None) -> str | None:
    """Why a candle is invalid, or None. Checks the OHLC envelope, NaN, volume and time order."""
    values = (bar.open, bar.high, bar.low, bar.close, bar.volume)
    if any(math.isnan(v) or math.isinf(v) for v in values):
        return "NaN or infinite value"
    if bar.high < max(bar.open, bar.close, bar.low):
        return "high below open, close or low"
    if bar.low > min(bar.open, bar.close):
        return "low above open or close"
    if bar.volume < 0:
        return "negative volume"
    if min(bar.open, bar.high, bar.low, bar.close) <= 0:
        return "non-positive price"
    if previous_open_time is not None and bar.open_time <= previous_open_time:
        return "duplicate" if bar.open_time == previous_open_time else "time goes backwards"
    return None


def resample(bars: list[Bar], tf_ms: int, source_ms: int = 60_000) -> list[Bar]:
    """Candles of a longer timeframe from shorter ones. A candle is made only for a period the data
    covers from its first bar to the one that closes it: the partial periods at either end are left out."""
    out: list[Bar] = []
    bucket: list[Bar] = []
    bucket_start = None
    for bar in bars:
        start = bar.open_time - bar.open_time % tf_ms
        if start != bucket_start:
            bucket, bucket_start = [], start
        bucket.append(bar)
        if bar.open_time + source_ms == start + tf_ms and bucket[0].open_time == start:
            out.append(Bar(start, bucket[0].open, max(b.high for b in bucket), min(b.low for b in bucket),
                           bar.close, sum(b.volume for b in bucket)))
    return out


def intrabar_path(bar: Bar, ticks: int) -> list[float]:
    """Prices a replayed candle trades through: open, the nearer extreme, the farther one, close."""
    if ticks == 1:
        return [bar.close]
    if bar.close >= bar.open:
        path = [bar.open, bar.low, bar.high, bar.close]
    else:
        path = [bar.open, bar.high, bar.low, bar.close]
    if ticks == 2:
        return [bar.open, bar.close]
    if ticks == 3:
        return [path[0], path[1], bar.close]
    return path


def merged_timeline(series: dict[str, list[Bar]], start: dict[str, int]) -> Iterator[tuple[str, Bar]]:
    """All symbols' bars in event-time order (ties in symbol order), from each symbol's start index."""
    cursors = {symbol: start.get(symbol, 0) for symbol in series}
    while True:
        best: tuple[int, str] | None = None
        for symbol, bars in series.items():
            i = cursors[symbol]
            if i < len(bars) and (best is None or bars[i].open_time < best[0]):
                best = (bars[i].open_time, symbol)
        if best is None:
            return
        symbol = best[1]
        yield symbol, series[symbol][cursors[symbol]]
        cursors[symbol] += 1


class Trade(NamedTuple):
    time: int
    price: float
    qty: float
