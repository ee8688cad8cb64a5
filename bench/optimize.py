"""Parameter search: Optuna's seeded TPE against random sampling of the grid, at equal trials, in one run.

The walk-forward optimisation the allocator runs (meshtrader.research.optimize) over a SQLite copy of the
bundled candles: for each strategy, each of WINDOWS consecutive 7-day windows (the last weeks of the data)
and each seed, both samplers try TRIALS parameter sets in sample, and their best is run out of sample. The
whole grid is also run once per strategy and window: the best any sampler could have found in sample.

Per sampler it prints the mean best in-sample objective and the mean out-of-sample objective of that best,
how often it found the grid's best, how often it beat the other sampler (in sample and out of sample; the
rest are ties), and its wall time. A run with too few trades to judge counts as worse than any judged one.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.forks import bundled_store
from meshtrader.persistence.store import Store
from meshtrader.research.optimize import Optimization, optimize
from meshtrader.runtime.config import Settings, load_settings

STRATEGIES = ("momentum", "macd", "mean_reversion")  # grids of 36, 27 and 18 sets
SAMPLERS = ("tpe", "random")
WINDOW_DAYS = 7  # the allocator's default optimisation window (MESH_OPTIMIZE_WINDOW_MIN)
WINDOWS = 3
SEEDS = 4
TRIALS = 12  # a third of the largest grid: where the choice of sets matters
WORKERS = 2
DAY_MS = 1440 * 60_000


def judged(value: float | None) -> float:
    return float("-inf") if value is None else value


def mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.fmean(known), 3) if known else None


def wins(mine: list[float | None], theirs: list[float | None]) -> int:
    return sum(judged(a) > judged(b) for a, b in zip(mine, theirs, strict=True))


def search(settings: Settings, db: Path, strategy: str, until: int, sampler: str, seed: int,
           trials: int) -> Optimization:
    return optimize(strategy, None, str(db), settings.symbols, settings, until - WINDOW_DAYS * DAY_MS, until,
                    samples=trials, workers=WORKERS, sampler=sampler, seed=seed)


def run_optimize_suite(progress: bool = True, seeds: int = SEEDS, trials: int = TRIALS) -> dict:
    settings = load_settings(research_cluster=None)
    runs: dict[str, list[Optimization]] = {sampler: [] for sampler in SAMPLERS}
    grid_best: list[float | None] = []  # per run: the grid's best in sample on its strategy and window
    wall = dict.fromkeys(SAMPLERS, 0.0)
    with tempfile.TemporaryDirectory(prefix="meshoptimize-") as tmp:
        db = Path(tmp) / "mesh.db"
        bundled_store(db)
        store = Store(db, read_only=True)
        last = store.scalar("SELECT MAX(open_time) FROM candles") + 60_000
        store.close()
        for strategy in STRATEGIES:
            for window in range(WINDOWS):
                until = last - window * WINDOW_DAYS * DAY_MS
                whole = search(settings, db, strategy, until, "random", 0, 0)
                grid_best += [whole.best_in_sample] * seeds
                for seed in range(seeds):
                    for sampler in SAMPLERS:
                        started = time.perf_counter()
                        result = search(settings, db, strategy, until, sampler, seed, trials)
                        wall[sampler] += time.perf_counter() - started
                        runs[sampler].append(result)
                if progress:
                    print(f"  {strategy} window {window}: grid best {whole.best_in_sample} of {whole.trials} sets; "
                          + ", ".join(f"{s} {[r.best_in_sample for r in runs[s][-seeds:]]}" for s in SAMPLERS),
                          file=sys.stderr)
    best_in = {s: [r.best_in_sample for r in runs[s]] for s in SAMPLERS}
    best_out = {s: [r.best_out_of_sample for r in runs[s]] for s in SAMPLERS}
    result = {"strategies": list(STRATEGIES), "windows": WINDOWS, "window_days": WINDOW_DAYS, "seeds": seeds,
              "trials": trials, "objective": settings.optimize_objective, "runs_per_sampler": len(grid_best)}
    for sampler, other in zip(SAMPLERS, reversed(SAMPLERS), strict=True):
        result[sampler] = {
            "mean_best_in_sample": mean(best_in[sampler]),
            "mean_its_out_of_sample": mean(best_out[sampler]),
            "found_grid_best": sum(a == b for a, b in zip(best_in[sampler], grid_best, strict=True)),
            "beats_other_in_sample": wins(best_in[sampler], best_in[other]),
            "beats_other_out_of_sample": wins(best_out[sampler], best_out[other]),
            "wall_s": round(wall[sampler], 1)}
    result["mean_grid_best_in_sample"] = mean(grid_best)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run_optimize_suite(), indent=2))
