"""Fork creation time per backend, for the bundled database (both symbols' 30 days of candles).

sqlite: the one-step online-backup snapshot, and the clone of it each fork is (reflink where the
filesystem can, copy_file_range otherwise).
postgres (a throwaway PostgreSQL started here): the golden template's rebuild from the live database,
a writable fork (CREATE DATABASE ... TEMPLATE golden) and a read-only fork (an exported snapshot).
tiger: not measured here; Tiger Cloud forks take minutes and need an account (the tests check the
client against a contract server).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from meshtrader.forks.backends import PostgresForks, SqliteForks
from meshtrader.marketdata.files import find_candle_file, load_bars
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import BUNDLED_DATA, load_settings
from meshtrader.wire.messages import Candle

FORKS = 10


def bundled_store(location: Path | str) -> int:
    store = Store(location)
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
                       "forks": FORKS},
            "postgres": postgres_forks(),
            "tiger": "not measured: needs a Tiger Cloud account (the client is tested against a contract server)"}


def postgres_forks() -> dict:
    from tools.pgserver import LocalPostgres, PostgresUnavailable

    try:
        server = LocalPostgres().start()
    except PostgresUnavailable as error:
        return {"skipped": str(error)}
    try:
        url = server.create_database("mesh")
        candles = bundled_store(url)
        backend = PostgresForks(url, golden_refresh_s=0)
        try:
            golden_ms = backend.refresh_golden()
            writable = [backend.create(f"fork-bench-w{i}", writable=True) for i in range(FORKS)]
            read_only = [backend.create(f"fork-bench-r{i}", writable=False) for i in range(FORKS)]
            result = {"candles": candles, "golden_refresh_ms": round(golden_ms, 2),
                      "template_fork_ms_median": round(statistics.median(f.details["create_ms"] for f in writable), 2),
                      "snapshot_fork_ms_median": round(statistics.median(f.details["create_ms"] for f in read_only), 2),
                      "forks": FORKS}
            for fork in writable + read_only:
                backend.destroy(fork.location)
        finally:
            backend.close()
        return result
    finally:
        server.stop()


if __name__ == "__main__":
    import json

    print(json.dumps(run_forks_suite(), indent=2))
