"""Validation backtests: every strategy over each lookback window of a fork, one task per strategy and
window, where research runs (meshtrader.research.cluster: in this process, or on the Dask cluster).

The allocator judges strategies from these reports (`judge`); a worker reads the longest window from the
fork once and cuts the shorter ones from it, as the allocator did inline.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from meshtrader.domain.allocation import (
    blend_windows,
    correlation_penalties,
    exposure_correlations,
    kelly_fraction,
    standardized,
)
from meshtrader.research.backtest import Backtester, Report
from meshtrader.research.cluster import WORKER_CACHE, Bars, BarSource, Shared, research_executor
from meshtrader.runtime.config import Settings
from meshtrader.runtime.log import Logger

MIN_TRADES = 2  # a window with fewer trades says nothing of a strategy: score 0, no edge shown


@dataclass
class Validation:
    windows: list[dict[str, Report]]  # per window, in the order asked: each strategy's report
    first_window_times: list[int]  # the first window's bar open times: the grid holdings are compared on


@dataclass(frozen=True)
class Judgement:
    """What the allocator decides from: each strategy's score, Kelly fraction and ROI, and how they hold together."""

    scores: dict[str, float]  # per-bar Sharpe per window, standardised, blended, tilted by regime, penalised
    kelly: dict[str, float]  # from the longest window (the most trades)
    rois: dict[str, float]  # ROI after fees, weighted over the windows: an edge when positive
    correlations: dict[tuple[str, str], float]  # of the positions held in the first window


def judge(validation: Validation, window_weights: list[float], correlation_max: float, regime_weight: float,
          learned: dict[str, float]) -> Judgement:
    """Score the strategies on their per-bar Sharpe (defined on windows of any length, unlike the daily one)
    standardised per window and blended recent first, tilted by the regime table's `learned` scores (once it
    has one for every strategy) and penalised for holding the same positions."""
    per_window = validation.windows
    recent, longest = per_window[0], per_window[-1]
    scores = blend_windows([{n: r.bar_sharpe if r.trades >= MIN_TRADES else 0.0 for n, r in w.items()}
                            for w in per_window], window_weights)
    tilt = standardized(learned) if len(learned) == len(scores) else {}
    correlations = exposure_correlations({n: holding(r, validation.first_window_times) for n, r in recent.items()})
    penalties = correlation_penalties(scores, correlations, correlation_max)
    weights = window_weights[: len(per_window)]
    total = sum(weights) or 1.0
    return Judgement(
        scores={n: round(v + regime_weight * tilt.get(n, 0.0) - penalties[n], 6) for n, v in scores.items()},
        kelly={n: round(kelly_fraction(r.win_rate, r.profit_factor), 6) for n, r in longest.items()},
        rois={n: round(sum(w[n].roi * weight for w, weight in zip(per_window, weights, strict=False)
                           if w[n].trades >= MIN_TRADES) / total, 8) for n in recent},
        correlations=correlations)


def holding(report: Report, times: list[int]) -> list[int]:
    """1 on each bar the strategy held a position (long or short), from its fills (entries and exits at bar
    close)."""
    changes = sorted((f.event_time, -1 if f.closing else 1) for f in report.fills)
    series, held, k = [], 0, 0
    for t in times:
        while k < len(changes) and changes[k][0] <= t:
            held = max(0, held + changes[k][1])
            k += 1
        series.append(1 if held else 0)
    return series


def validate_here(strategies: dict[str, dict | None], series: Bars, starts: list[int],
                  settings: Settings) -> Validation:
    """The validation backtests in this process, over bars already read: each strategy over the bars
    opened since each of `starts` (the benchmarks walk forward with it)."""
    return Validation([{name: window_backtest(name, params, series, since, settings)
                        for name, params in strategies.items()} for since in starts],
                      window_open_times(series, starts[0]))


def window_backtest(strategy: str, params: dict | None, series: Bars, since: int, settings: Settings) -> Report:
    """One strategy over the bars opened since `since`."""
    window = {symbol: [b for b in bars if b.open_time >= since] for symbol, bars in series.items()}
    return Backtester({strategy: params}, list(series), settings, settings.timeframe).run(window)


def window_open_times(series: Bars, since: int) -> list[int]:
    return sorted({b.open_time for bars in series.values() for b in bars if b.open_time >= since})


def window_bars(run: Shared) -> Bars:
    return WORKER_CACHE.get(run.source, run.source.read)


def backtest_window(run: Shared, job: tuple[str, dict | None, int]) -> Report:
    strategy, params, since = job
    return window_backtest(strategy, params, window_bars(run), since, run.settings)


def open_times(run: Shared, since: int) -> list[int]:
    return window_open_times(window_bars(run), since)


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
