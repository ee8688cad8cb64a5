"""Validation backtests: every strategy over each lookback window of a fork, one task per strategy and
window, where research runs (meshtrader.research.cluster: in this process, or on the Dask cluster).

The allocator scores strategies from these reports; a worker reads the longest window from the fork once
and cuts the shorter ones from it, as the allocator did inline.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from meshtrader.research.backtest import Backtester, Report
from meshtrader.research.cluster import WORKER_CACHE, Bars, BarSource, Shared, research_executor
from meshtrader.runtime.config import Settings
from meshtrader.runtime.log import Logger


@dataclass
class Validation:
    windows: list[dict[str, Report]]  # per window, in the order asked: each strategy's report
    first_window_times: list[int]  # the first window's bar open times: the grid holdings are compared on


def window_bars(run: Shared) -> Bars:
    return WORKER_CACHE.get(run.source, run.source.read)


def backtest_window(run: Shared, job: tuple[str, dict | None, int]) -> Report:
    """One strategy over the bars opened since `since`."""
    strategy, params, since = job
    window = {symbol: [b for b in bars if b.open_time >= since] for symbol, bars in window_bars(run).items()}
    return Backtester({strategy: params}, list(run.source.symbols), run.settings, run.settings.timeframe).run(window)


def open_times(run: Shared, since: int) -> list[int]:
    return sorted({b.open_time for bars in window_bars(run).values() for b in bars if b.open_time >= since})


def validation_backtests(strategies: dict[str, dict | None], windows_min: list[float], location: str,
                         settings: Settings, now: int, log: Logger | None = None,
                         cancelled: Callable[[], bool] | None = None) -> Validation:
    """Backtest each strategy (name: parameters) over each window of `windows_min` market minutes before
    `now`, on the fork at `location`. Run here, `cancelled` true raises research.cluster.Cancelled."""
    starts = [now - int(minutes * 60_000) for minutes in windows_min]
    run = Shared(BarSource(location, tuple(settings.symbols), settings.timeframe, min(starts)), settings)
    jobs = [(name, params, since) for since in starts for name, params in strategies.items()]
    with research_executor(settings, 1, log, cancelled) as executor:
        reports = iter(executor.map(backtest_window, run, jobs))
        (times,) = executor.map(open_times, run, [starts[0]])
    return Validation([{name: next(reports) for name in strategies} for _ in starts], times)
