"""Fork creation time per backend, for the bundled database (both symbols' 30 days of candles).

sqlite: the one-step online-backup snapshot, and the clone of it each fork is (reflink where the
filesystem can, copy_file_range otherwise). Other backends report here as they arrive.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from core.config import BUNDLED_DATA, load_settings
from core.forks import SqliteForks
from core.marketdata import find_candle_file, load_bars
from core.messages import Candle
from core.store import Store

FORKS = 10


def bundled_store(path: Path) -> int:
    store = Store(path)
    count = 0
    for symbol in load_settings().symbols:
        bars, _ = load_bars(find_candle_file(BUNDLED_DATA, symbol))
        store.insert_candles(Candle(symbol=symbol, tf="1m", open_time=b.open_time, open=b.open, high=b.high,
                                    low=b.low, close=b.close, volume=b.volume) for b in bars)
        count += len(bars)
    store.close()
    return count


def run_forks_suite() -> dict:
    with tempfile.TemporaryDirectory(prefix="meshforks-") as tmp:
        directory = Path(tmp)
        candles = bundled_store(directory / "mesh.db")
        (directory / "forks").mkdir()
        backend = SqliteForks(directory / "mesh.db", directory / "forks", golden_max_age_s=3600)
        snapshots, clones, method = [], [], ""
        for i in range(FORKS):
            backend.golden_taken = 0.0 if i == 0 else time.monotonic()  # first: snapshot + clone; then clones
            made = backend.create(f"fork-bench-{i}").details
            method = made["method"]
            if made["snapshot_ms"]:
                snapshots.append(made["snapshot_ms"])
            clones.append(made["clone_ms"])
        size = (directory / "mesh.db").stat().st_size
    return {"sqlite": {"db_bytes": size, "candles": candles, "snapshot_ms": round(snapshots[0], 2),
                       "clone_ms_median": round(statistics.median(clones), 2), "clone_method": method,
                       "forks": FORKS}}


if __name__ == "__main__":
    import json

    print(json.dumps(run_forks_suite(), indent=2))
