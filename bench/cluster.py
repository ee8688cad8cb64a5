"""Research on a Dask cluster against local worker processes, in one run: the walk-forward optimisation
the allocator runs (meshtrader.research.optimize) over a SQLite copy of the bundled candles, once in
`workers` local processes and once on a Dask LocalCluster of as many single-threaded worker processes on
loopback (MESH_RESEARCH_CLUSTER). Prints trials per second each way, their ratio, and whether both found
the same.

A trial is one backtest of a parameter set: every set of the grid in sample, then the best and the live
set out of sample. Each way's time is what the allocator pays per optimisation: the local processes are
spawned and import the code; the cluster stands (its start is timed apart), the client connects and each
worker reads the candles from the fork on its first task.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from distributed import LocalCluster

from bench.forks import bundled_store
from meshtrader.persistence.store import Store
from meshtrader.research.optimize import Optimization, optimize
from meshtrader.runtime.config import Settings, load_settings

STRATEGY = "macd"  # its whole grid: 27 parameter sets
DAYS = 14


def optimization(settings: Settings, db: Path, workers: int) -> Optimization:
    store = Store(db, read_only=True)
    until = store.scalar("SELECT MAX(open_time) FROM candles") + 60_000
    store.close()
    return optimize(STRATEGY, None, str(db), settings.symbols, settings, until - DAYS * 1440 * 60_000, until,
                    samples=0, workers=workers)


def trials_per_s(result: Optimization) -> float:
    return round((result.trials + 2) / result.seconds, 2)


def same_search(a: Optimization, b: Optimization) -> bool:
    return {**a.summary(), "seconds": 0} == {**b.summary(), "seconds": 0}


def run_cluster_suite(progress: bool = True, workers: int = 2) -> dict:
    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="meshcluster-") as tmp:
        db = Path(tmp) / "mesh.db"
        bundled_store(db)
        local = optimization(settings.model_copy(update={"research_cluster": None}), db, workers)
        if progress:
            print(f"local: {local.trials + 2} trials in {local.seconds:.1f}s in {workers} processes")
        started = time.perf_counter()
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          host="127.0.0.1") as cluster:
            cluster_start_s = round(time.perf_counter() - started, 2)
            remote = optimization(settings.model_copy(update={"research_cluster": cluster.scheduler_address}), db,
                                  workers)
        if progress:
            print(f"cluster: {remote.trials + 2} trials in {remote.seconds:.1f}s on {remote.workers} Dask workers "
                  f"(the cluster started in {cluster_start_s:.1f}s)")
    local_rate, cluster_rate = trials_per_s(local), trials_per_s(remote)
    return {"strategy": STRATEGY, "days": DAYS, "trials": local.trials + 2, "workers": workers,
            "cpu_count": os.cpu_count(), "local_trials_per_s": local_rate, "cluster_trials_per_s": cluster_rate,
            "ratio": round(cluster_rate / local_rate, 2), "local_s": local.seconds, "cluster_s": remote.seconds,
            "cluster_start_s": cluster_start_s, "same_results": same_search(local, remote)}


if __name__ == "__main__":
    import json

    print(json.dumps(run_cluster_suite(), indent=2))
