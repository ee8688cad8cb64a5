"""A SQLite store holding the bundled candles: a fork for research workers to read."""
from __future__ import annotations

from pathlib import Path

from meshtrader.persistence.store import Store
from support.candles import bundled_candles

SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def candle_store(path: Path, bars: int) -> tuple[str, int]:
    """The first `bars` 1-minute candles of each bundled symbol in a new store at `path`: its location, and
    the market time just after its last candle closed."""
    candles = {symbol: bundled_candles(symbol, bars) for symbol in SYMBOLS}
    store = Store(path)
    try:
        for series in candles.values():
            store.insert_candles(series)
    finally:
        store.close()
    return str(path), max(series[-1].et for series in candles.values())
