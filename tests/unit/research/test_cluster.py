"""Research on a Dask cluster (MESH_RESEARCH_CLUSTER): a real local cluster of worker processes on loopback
runs the optimisation trials and validation backtests, with the same results as running them locally."""
from __future__ import annotations

import io
import json
import pickle
import socket
from collections.abc import Iterator

import pytest
from dask.utils import key_split
from distributed import Client, LocalCluster
from support.candle_store import SYMBOLS, candle_store

from meshtrader.research import cluster
from meshtrader.research.optimize import optimize
from meshtrader.research.validation import validation_backtests
from meshtrader.runtime.config import Settings, load_settings
from meshtrader.runtime.log import Logger

BARS = 3000
WINDOWS_MIN = [600, 1500, 3000]


@pytest.fixture(scope="module")
def fork(tmp_path_factory) -> tuple[str, int]:
    return candle_store(tmp_path_factory.mktemp("cluster") / "fork.db", BARS)


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[tuple[str, Client]]:
    """Two single-threaded worker processes and their scheduler, on loopback; and a client watching them."""
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                      host="127.0.0.1") as local, Client(local.scheduler_address, set_as_default=False) as client:
        yield local.scheduler_address, client


def logged(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def run_both(settings: Settings, fork: tuple[str, int], log: Logger) -> tuple[dict, object]:
    location, now = fork
    since = now - BARS * 60_000
    trials = optimize("macd", None, location, SYMBOLS, settings, since, now, samples=6, workers=2, log=log).summary()
    trials.pop("seconds")
    validation = validation_backtests({name: None for name in settings.strategies}, WINDOWS_MIN, location, settings,
                                      now, log)
    return trials, validation


def test_trials_and_validation_run_on_the_cluster_with_the_same_results(fork, dask_cluster):
    address, watcher = dask_cluster
    watcher.get_task_stream()  # starts the scheduler's record of which worker ran what
    local_settings = load_settings()
    here = run_both(local_settings, fork, Logger("allocator", stream=io.StringIO()))
    stream = io.StringIO()
    there = run_both(local_settings.model_copy(update={"research_cluster": address}), fork,
                     Logger("allocator", stream=stream))

    assert here == there  # the same best parameters, scores, trades; every report fill for fill
    (trials, validation) = there
    assert trials["workers"] == 2 and trials["trials"] == 6
    assert len(validation.windows) == len(WINDOWS_MIN) and validation.windows[-1]["macd"].bars == 2 * BARS
    assert any(report.trades for window in validation.windows for report in window.values())
    ran = watcher.get_task_stream()
    workers = {task["worker"] for task in ran}
    assert workers <= set(watcher.nthreads()) and workers
    kinds = [key_split(task["key"]) for task in ran]
    assert {kind: kinds.count(kind) for kind in set(kinds)} == {
        "segment_sizes": 1, "run_trial": 6 + 2,  # in sample, then the best and the live set out of sample
        "backtest_window": len(WINDOWS_MIN) * len(local_settings.strategies), "open_times": 1}
    assert [(line["level"], line["event"], line["address"]) for line in logged(stream)] == [
        ("INFO", "research_on_cluster", address)] * 2


def test_an_unreachable_cluster_is_logged_and_the_work_runs_here(fork, monkeypatch):
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        nowhere = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 0.5)
    settings = load_settings()
    location, now = fork
    stream = io.StringIO()
    fell_back = validation_backtests({"macd": None}, WINDOWS_MIN[:1], location,
                                     settings.model_copy(update={"research_cluster": nowhere}), now,
                                     Logger("allocator", stream=stream))
    assert fell_back == validation_backtests({"macd": None}, WINDOWS_MIN[:1], location, settings, now)
    (line,) = logged(stream)
    assert (line["level"], line["event"], line["address"], line["fallback"]) == (
        "ERROR", "research_cluster_unreachable", nowhere, "this process")
    assert "Timed out trying to connect" in line["error"]


def test_what_goes_to_a_cluster_carries_no_credentials():
    secret = "s3cret-pw"
    settings = load_settings(db_url=f"postgresql://mesh:{secret}@127.0.0.1:5432/mesh",
                             alert_webhook_url=f"http://127.0.0.1:9/hook?token={secret}")
    shared = cluster.Shared(cluster.BarSource(f"postgresql://mesh:{secret}@127.0.0.1:5432/fork_1", tuple(SYMBOLS),
                                              "1m", 0), settings)
    portable = shared.portable()
    assert secret.encode() in pickle.dumps(shared) and secret.encode() not in pickle.dumps(portable)
    assert portable.source.location == "postgresql://mesh:***@127.0.0.1:5432/fork_1"
    assert portable.settings.capital == settings.capital and portable.settings.symbols == settings.symbols
