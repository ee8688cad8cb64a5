"""Candle files: bad candles rejected with a reason, the bundled data's provenance."""
from __future__ import annotations

import gzip
from pathlib import Path

from meshtrader.domain.candles import Bar, candle_problem
from meshtrader.marketdata.files import find_candle_file, load_bars
from meshtrader.runtime.config import REPO_ROOT


def test_bad_candles_are_rejected_with_a_reason(tmp_path):
    assert candle_problem(Bar(2, 10, 9, 8, 9.5, 1), None) == "high below open, close or low"
    assert candle_problem(Bar(2, 10, 11, 10.5, 9.5, 1), None) == "low above open or close"
    assert candle_problem(Bar(2, 10, 11, 9, 10, -1), None) == "negative volume"
    assert candle_problem(Bar(2, 10, 11, 9, float("nan"), 1), None) == "NaN or infinite value"
    assert candle_problem(Bar(2, 10, 11, 9, 10, 1), 2) == "duplicate"
    path = tmp_path / "x_BTCUSDT_1m_test.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("timestamp_ms,open,high,low,close,volume\n60000,1,2,0.5,1.5,3\nbad,row\n"
                     "60000,1,2,0.5,1.5,3\n120000,1,0.9,0.5,1.5,3\n180000,1,2,0.5,1.5,3\n")
    bars, rejected = load_bars(find_candle_file(tmp_path, "BTCUSDT"))
    assert [b.open_time for b in bars] == [60000, 180000]
    assert len(rejected) == 3 and "duplicate" in rejected[1]


def test_bundled_data_ships_with_provenance():
    assert (REPO_ROOT / "data" / "PROVENANCE.md").exists()
    assert len(list(Path(REPO_ROOT / "data").glob("*_1m_*.csv.gz"))) == 2
