"""Market data files and candles: loading the shipped CSVs, validating, and the intrabar tick path."""
from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

TIMEFRAMES_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000,
                 "1d": 86_400_000}
CANDLE_COLUMNS = ("timestamp_ms", "open", "high", "low", "close", "volume")


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


class DataError(ValueError):
    pass


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


def find_candle_file(data_dir: Path, symbol: str, tf: str = "1m") -> Path:
    """The candle file for a symbol: a name containing the symbol and `_<tf>`, .csv or .csv.gz."""
    matches = sorted(p for p in data_dir.glob(f"*{symbol}*_{tf}*") if p.name.endswith((".csv", ".csv.gz")))
    if not matches:
        raise DataError(f"no {tf} candle file for {symbol} in {data_dir} (expected *{symbol}*_{tf}*.csv[.gz])")
    return matches[0]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def load_bars(path: Path) -> tuple[list[Bar], list[str]]:
    """Read a candle CSV; returns the valid bars and one line per rejected row (never raises on a row)."""
    bars: list[Bar] = []
    rejected: list[str] = []
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header[:6]) != CANDLE_COLUMNS:
            raise DataError(f"{path.name}: expected header {','.join(CANDLE_COLUMNS)}, got {header}")
        previous = None
        for line_number, row in enumerate(reader, start=2):
            try:
                bar = Bar(int(row[0]), *(float(x) for x in row[1:6]))
            except (ValueError, IndexError) as error:
                rejected.append(f"{path.name}:{line_number}: unreadable row ({error})")
                continue
            problem = candle_problem(bar, previous)
            if problem:
                rejected.append(f"{path.name}:{line_number}: {problem}")
                continue
            previous = bar.open_time
            bars.append(bar)
    return bars, rejected


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


def find_series_file(data_dir: Path, symbol: str, kind: str) -> Path | None:
    """A funding or trades file for a symbol (`*<SYMBOL>_<kind>_*.csv[.gz]`), or None."""
    matches = sorted(p for p in data_dir.glob(f"*{symbol}_{kind}*") if p.name.endswith((".csv", ".csv.gz")))
    return matches[0] if matches else None


def load_rows(path: Path, columns: tuple[str, ...]) -> list[list[str]]:
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = tuple(h.strip() for h in next(reader, []))
        if header[:len(columns)] != columns:
            raise DataError(f"{path.name}: expected header {','.join(columns)}, got {header}")
        return [row for row in reader if row]


def load_trades(path: Path) -> list[Trade]:
    return [Trade(int(r[0]), float(r[1]), float(r[2]))
            for r in load_rows(path, ("timestamp_ms", "price", "qty", "is_buyer_maker"))]


def load_funding(path: Path) -> list[tuple[int, float]]:
    return [(int(r[0]), float(r[1])) for r in load_rows(path, ("timestamp_ms", "funding_rate"))]


class CandleBuilder:
    """Builds candles from trades. A candle closes when a trade of a later period arrives; periods with
    no trade become flat candles at the last price, so the series has no holes."""

    def __init__(self, tf_ms: int) -> None:
        self.tf_ms = tf_ms
        self.current: list[float] | None = None  # open_time, open, high, low, close, volume

    def add(self, trade: Trade) -> list[Bar]:
        bucket = trade.time - trade.time % self.tf_ms
        closed: list[Bar] = []
        if self.current is not None and bucket > self.current[0]:
            closed.append(Bar(int(self.current[0]), *self.current[1:]))
            last = self.current[4]
            for empty in range(int(self.current[0]) + self.tf_ms, bucket, self.tf_ms):
                closed.append(Bar(empty, last, last, last, last, 0.0))
            self.current = None
        if self.current is None:
            self.current = [bucket, trade.price, trade.price, trade.price, trade.price, trade.qty]
        elif bucket == self.current[0]:
            c = self.current
            c[2], c[3], c[4], c[5] = max(c[2], trade.price), min(c[3], trade.price), trade.price, c[5] + trade.qty
        return closed
