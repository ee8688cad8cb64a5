"""Research tasks on a Dask distributed cluster: the remote side of meshtrader.research.cluster, imported
only when MESH_RESEARCH_CLUSTER is set (dask is the optional `cluster` extra)."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import distributed

from meshtrader.research.cluster import Executor, Shared
from meshtrader.runtime.log import Logger
from meshtrader.runtime.redaction import redact

POLL_S = 1.0  # how often a wait for a result looks at whether the cluster still has workers
NO_WORKERS_S = 30.0  # a cluster without a worker this long is lost: its tasks would wait for ever

T = TypeVar("T")


class ClusterLost(RuntimeError):
    pass


class DaskExecutor(Executor):
    """Tasks on the cluster at `address`. After anything fails there (logged), the run's tasks go to the
    local executor `fallback` makes: a bug in a task then fails there too, as it would without a cluster."""

    def __init__(self, address: str, connect_timeout_s: float, log: Logger, fallback: Callable[[], Executor]) -> None:
        self.address, self.log, self.fallback = redact(address), log, fallback
        self.local: Executor | None = None
        self.client = distributed.Client(address, timeout=connect_timeout_s, set_as_default=False)
        try:
            self.client.wait_for_workers(1, timeout=connect_timeout_s)  # a scheduler alone would hold tasks for ever
            self.workers = sum(self.client.nthreads().values())
        except BaseException:
            self.client.close()
            raise
        self.where = f"Dask cluster {self.address} ({self.workers} workers)"

    def map(self, task: Callable[[Any, Any], T], shared: Shared, items: Sequence[Any]) -> list[T]:
        if self.local is None:
            try:
                portable = shared.portable()
                futures = [self.client.submit(task, portable, item, pure=False) for item in items]
                return [self.result(future) for future in futures]
            except Exception as error:  # the cluster, or a worker that cannot open the fork: the work is done here
                self.local = self.fallback()
                self.log.error("research_cluster_failed", address=self.address, error=repr(error),
                               fallback=self.local.where)
        return self.local.map(task, shared, items)

    def result(self, future: distributed.Future) -> Any:
        """A task's result, given up on once the cluster has had no worker for NO_WORKERS_S."""
        alone_since: float | None = None
        while True:
            try:
                return future.result(timeout=POLL_S)
            except TimeoutError:
                if future.done():
                    raise  # the task's own error
            if self.client.nthreads():
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > NO_WORKERS_S:
                raise ClusterLost(f"no worker for {NO_WORKERS_S:g} s") from None

    def close(self) -> None:
        self.client.close()
        if self.local is not None:
            self.local.close()
