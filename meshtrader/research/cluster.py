"""Where research work runs: in this process, in local worker processes, or on a Dask distributed cluster.

With MESH_RESEARCH_CLUSTER (a Dask scheduler's address, tcp://host:8786), validation backtests and
optimisation trials are submitted to that cluster; without it they run here as they always did. The
results are the same either way: the same tasks on the same bars. A cluster that cannot be reached, or
fails during a run, is logged as an error and the work runs locally instead: research never stops the
allocator.

Why Dask distributed and not Ray: it is pure Python and light to install, a scheduler and its workers
start in about a second even on a 2-core machine, and `Client.submit` of a few heavy, uneven tasks is
exactly the shape of this work. Ray's wheels are large, its raylet and GCS take several seconds and much
memory to start, and what it adds (actors, a shared object store) this work does not use.

A task carries where its bars are (a `BarSource`: the fork's location and the window), never the bars:
each worker reads them itself, once per window (`WORKER_CACHE`), so nothing large is pickled and a
run's many tasks read the store once per worker. On the way to a cluster the location loses its
password and the settings their credentials (`Shared.portable`); a worker puts the password back from
its own MESH_DB_URL (environment or .env). So the location must be reachable from the workers: a
PostgreSQL URL in practice, or a SQLite path on a filesystem they share.
"""
from __future__ import annotations

import multiprocessing
import sys
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from itertools import repeat
from typing import Any, Self, TypeVar

from meshtrader.domain.candles import Bar
from meshtrader.persistence.store import Store
from meshtrader.runtime.config import CREDENTIAL_SETTINGS, Settings, credential
from meshtrader.runtime.log import Logger
from meshtrader.runtime.redaction import redact, unredact

CONNECT_TIMEOUT_S = 5.0  # a scheduler (and one worker) that has not answered by then is unreachable

Bars = dict[str, list[Bar]]
T = TypeVar("T")


@dataclass(frozen=True)
class BarSource:
    """Candles of `symbols` opened in [since, until) in the store at `location` (a fork)."""
    location: str
    symbols: tuple[str, ...]
    tf: str
    since: int
    until: int = 2**62

    def read(self) -> Bars:
        store = Store(unredact(self.location, credential("MESH_DB_URL")), read_only=True)
        try:
            return {symbol: store.bars(symbol, self.tf, self.since, self.until) for symbol in self.symbols}
        finally:
            store.close()


@dataclass(frozen=True)
class Shared:
    """What every task of one run needs besides its own item: where the bars are, and the settings."""
    source: BarSource
    settings: Settings

    def portable(self) -> Self:
        """Fit to leave this machine: the location without its password, the settings without credentials."""
        settings = self.settings
        cleared = {name: [] if isinstance(getattr(settings, name), list) else None for name in CREDENTIAL_SETTINGS}
        redacted = {name: redact(value) for name, value in settings if isinstance(value, str) and "://" in value}
        return replace(self, source=replace(self.source, location=redact(self.source.location)),
                       settings=settings.model_copy(update={**redacted, **cleared}))


class WorkerCache:
    """The last few things this process's tasks built from a fork (its bars, their split), so a worker's
    many tasks read the store once. A few, not one: the allocator's validation and optimisation may share
    a worker at the same time."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], T]) -> T:
        with self.lock:  # held while building: two threads wanting the same bars read them once
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key]
            value = self.entries[key] = build()
            while len(self.entries) > self.capacity:
                self.entries.popitem(last=False)
            return value

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()


WORKER_CACHE = WorkerCache()


class Executor(ABC):
    """Runs `task(shared, item)` for each item; the results in the items' order."""
    workers = 1
    where = "this process"

    @abstractmethod
    def map(self, task: Callable[[Any, Any], T], shared: Shared, items: Sequence[Any]) -> list[T]:
        ...

    @abstractmethod
    def close(self) -> None:
        ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Cancelled(Exception):
    """The caller asked to stop (its service is shutting down): the rest of the items were not run."""


class InProcess(Executor):
    """In the caller's thread, item by item: `cancelled` is asked before each, so a service told to stop
    while it validates stops within one backtest, not after all of them."""

    def __init__(self, cancelled: Callable[[], bool] | None = None) -> None:
        self.cancelled = cancelled or (lambda: False)

    def map(self, task: Callable[[Any, Any], T], shared: Shared, items: Sequence[Any]) -> list[T]:
        results = []
        for item in items:
            if self.cancelled():
                raise Cancelled(f"{len(items) - len(results)} of {len(items)} tasks not run")
            results.append(task(shared, item))
        return results

    def close(self) -> None:
        WORKER_CACHE.clear()  # this process is no worker: it does not keep a fork's bars after the run


class LocalProcesses(Executor):
    """Worker processes on this machine, spawned (the caller may hold sockets and threads); one task per
    item: few, heavy, uneven tasks balance best."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.where = f"{workers} local processes"
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def map(self, task: Callable[[Any, Any], T], shared: Shared, items: Sequence[Any]) -> list[T]:
        return list(self.pool.map(task, repeat(shared), items))

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def local_executor(workers: int, cancelled: Callable[[], bool] | None = None) -> Executor:
    return LocalProcesses(workers) if workers > 1 else InProcess(cancelled)


def research_executor(settings: Settings, workers: int, log: Logger | None = None,
                      cancelled: Callable[[], bool] | None = None) -> Executor:
    """The cluster MESH_RESEARCH_CLUSTER names; else, or when it cannot be reached, `workers` local processes
    (1: this process, where `cancelled` can cut the work short)."""
    address = settings.research_cluster
    if not address:
        return local_executor(workers, cancelled)
    log = log or Logger("research", stream=sys.stderr)
    try:
        # the optional `cluster` extra, and half a second of imports a mesh without a cluster never pays
        from meshtrader.research.dask_cluster import DaskExecutor

        executor = DaskExecutor(address, CONNECT_TIMEOUT_S, log, lambda: local_executor(workers, cancelled))
    except (ImportError, OSError, ValueError) as error:  # no dask, no answer, or an address it cannot parse
        local = local_executor(workers, cancelled)
        log.error("research_cluster_unreachable", address=redact(address), error=str(error), fallback=local.where)
        return local
    log.info("research_on_cluster", address=redact(address), workers=executor.workers)
    return executor
