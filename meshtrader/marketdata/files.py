"""Market data files: the shipped CSVs (candles, funding rates, raw trades) and the instruments they are
of (instruments.json), read and validated."""
from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

from meshtrader.domain.candles import Bar, Trade, candle_problem
from meshtrader.domain.instruments import BUNDLED_INSTRUMENTS, InstrumentSet, MarketType, parse_instruments

CANDLE_COLUMNS = ("timestamp_ms", "open", "high", "low", "close", "volume")


class DataError(ValueError):
    pass


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
    """(settlement time, rate). Binance stamps a settlement a few ms after the hour it settles at: the time
    is taken to the second, so it falls with the candle that closes then (its mark)."""
    return [(int(r[0]) // 1000 * 1000, float(r[1])) for r in load_rows(path, ("timestamp_ms", "funding_rate"))]


def load_data_instruments(data_dir: Path, market_type: MarketType) -> InstrumentSet:
    """The instruments.json beside the data (MESH_DATA), else the bundled one: those of one market type."""
    own = data_dir / BUNDLED_INSTRUMENTS.name
    path = own if own.is_file() else BUNDLED_INSTRUMENTS
    try:
        return parse_instruments(json.loads(path.read_text()), market_type, str(path))
    except (OSError, ValueError) as error:
        raise DataError(f"unreadable instruments file: {error}") from None
