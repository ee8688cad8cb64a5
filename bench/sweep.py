"""Parameter-sweep throughput, serial vs parallel, in one run: the walk-forward optimisation the
allocator runs (meshtrader.research.optimize), over a SQLite copy of the bundled candles, once in this process and
once in worker processes. Prints configurations x bars per second for each and the ratio.

The parallel figure includes starting the workers (spawned processes import the code and load the
candles from the fork themselves), as the allocator pays it.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.forks import bundled_store
from meshtrader.persistence.store import Store
from meshtrader.research.optimize import optimize
from meshtrader.runtime.config import load_settings

STRATEGY = "macd"  # its whole grid: 27 parameter sets
DAYS = 14


def run_sweep_suite(progress: bool = True, workers: int = 2) -> dict:
    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="meshsweep-") as tmp:
        db = Path(tmp) / "mesh.db"
        bundled_store(db)
        store = Store(db, read_only=True)
        until = store.scalar("SELECT MAX(open_time) FROM candles") + 60_000
        store.close()
        since = until - DAYS * 1440 * 60_000
        runs = {}
        for label, count in (("serial", 1), ("parallel", workers)):
            result = optimize(STRATEGY, None, str(db), settings.symbols, settings, since, until, samples=0,
                              workers=count)
            work = result.trials * result.bars_in_sample + 2 * result.bars_out_of_sample
            runs[label] = {"workers": count, "seconds": result.seconds,
                           "config_bars_per_s": round(work / result.seconds), "best_params": result.best_params}
            if progress:
                print(f"{label}: {result.trials} sets x {result.bars_in_sample} bars in {result.seconds:.1f}s "
                      f"with {count} worker(s)")
    same = runs["serial"]["best_params"] == runs["parallel"]["best_params"]
    return {"strategy": STRATEGY, "days": DAYS, "configs": result.trials, "cpu_count": os.cpu_count(),
            "serial_config_bars_per_s": runs["serial"]["config_bars_per_s"],
            "parallel_config_bars_per_s": runs["parallel"]["config_bars_per_s"], "parallel_workers": workers,
            "ratio_parallel_vs_serial": round(runs["parallel"]["config_bars_per_s"]
                                              / runs["serial"]["config_bars_per_s"], 2),
            "same_best_params": same, "serial_s": runs["serial"]["seconds"], "parallel_s": runs["parallel"]["seconds"]}


if __name__ == "__main__":
    import json

    print(json.dumps(run_sweep_suite(), indent=2))
