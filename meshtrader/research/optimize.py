"""Parameter optimisation with a walk-forward check, in parallel workers reading a fork.

The window of candles is split in time: the first part (in sample) ranks parameter sets of the strategy's
search space by the objective (the whole grid, or a budget of sets chosen by Optuna's TPE or at random:
meshtrader.research.search); the best set and the live set are then both run on the rest (out of sample),
which neither has seen while being chosen.
The best is proposed for adoption only if it beats the live set out of sample: a set that merely fits
the past better is not enough.

Each worker (a local process, or one of the Dask cluster's: meshtrader.research.cluster) opens the fork
itself (read-only) and keeps the candles for all of its trials; the work is the same event-driven
backtester the mesh's validation uses.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from meshtrader.domain.candles import Bar
from meshtrader.research.backtest import Backtester
from meshtrader.research.cluster import WORKER_CACHE, Bars, BarSource, Shared, research_executor
from meshtrader.research.metrics import ranking_figure
from meshtrader.research.search import ParameterSearch, Rejects, Sampler, random_sets, valid_sets
from meshtrader.runtime.config import Settings
from meshtrader.runtime.log import Logger
from meshtrader.strategies import REGISTRY, ParameterError, create

OBJECTIVES = ("sharpe", "sortino", "roi", "profit_factor")
MIN_TRADES = 2  # fewer trades than this say nothing about a parameter set
PROGRESS_EVERY = 8  # trials between progress lines in the log: a short search stays quiet


@dataclass(frozen=True)
class Trial:
    params: dict
    score: float | None  # None: too few trades to judge
    trades: int
    roi: float


@dataclass
class Optimization:
    strategy: str
    objective: str
    trials: int
    bars_in_sample: int
    bars_out_of_sample: int
    best_params: dict
    best_in_sample: float | None
    best_out_of_sample: float | None
    live_params: dict
    live_out_of_sample: float | None
    adopt: bool
    reason: str
    seconds: float
    workers: int
    top: list[dict]
    sampler: str = "random"  # tpe, random, or grid (the whole grid was tried)
    seed: int = 0
    study: list[dict] = field(default_factory=list)  # every trial of the search (search.ParameterSearch.stored)

    def summary(self) -> dict[str, Any]:
        return asdict(self)


def rejection(strategy: str) -> Rejects:
    """Why the strategy refuses a parameter set (its Params validation), or None."""
    def rejects(params: dict) -> str | None:
        try:
            create(strategy, "BTCUSDT", params)
        except ParameterError as error:
            return str(error)
        return None
    return rejects


def parameter_sets(strategy: str, samples: int = 0, seed: int = 0) -> list[dict]:
    """The valid sets of the strategy's grid, or `samples` distinct random ones of them (seeded: the same run
    twice tries the same sets): what the random sampler tries."""
    return random_sets(valid_sets(REGISTRY[strategy].search_space, rejection(strategy)), samples, seed)


def split_in_time(series: dict[str, list[Bar]], in_sample_share: float) -> tuple[dict, dict]:
    """In sample: every bar before the cut; out of sample: the rest (the cut is one instant for all symbols)."""
    times = sorted(b.open_time for bars in series.values() for b in bars)
    if not times:
        return series, {s: [] for s in series}
    cut = times[min(len(times) - 1, int(len(times) * in_sample_share))]
    return ({s: [b for b in bars if b.open_time < cut] for s, bars in series.items()},
            {s: [b for b in bars if b.open_time >= cut] for s, bars in series.items()})


def score(report: Any, objective: str) -> float | None:
    if report.trades < MIN_TRADES:
        return None
    value = getattr(report, ranking_figure(objective))  # a daily Sharpe needs days a segment may not have
    return float(value) if value is not None else 0.0


def rank_key(trial: Trial) -> tuple:
    """Best first: judged before unjudged, then by score, then by the parameters (a stable tie-break)."""
    return (trial.score is None, -(trial.score or 0.0), repr(sorted(trial.params.items())))


# ----- the tasks (on a worker) ----------------------------------------------------------------------
@dataclass(frozen=True)
class TrialRun(Shared):
    """What every trial of one optimisation shares."""
    objective: str = "sharpe"
    in_sample_share: float = 0.7


def segments(run: TrialRun) -> tuple[Bars, Bars]:
    """The run's bars in sample and out of sample, read from the fork once per worker."""
    return WORKER_CACHE.get(("segments", run.source, run.in_sample_share),
                            lambda: split_in_time(run.source.read(), run.in_sample_share))


def run_trial(run: TrialRun, job: tuple[str, dict, int]) -> tuple[dict, float | None, int, float]:
    strategy, params, segment = job
    series = segments(run)[segment]
    report = Backtester({strategy: params}, list(series), run.settings, run.settings.timeframe).run(series)
    return params, score(report, run.objective), report.trades, report.roi


def segment_sizes(run: TrialRun, _: object) -> tuple[int, int]:
    """Bars in sample and out of sample, as the workers load them."""
    early, late = segments(run)
    return sum(len(b) for b in early.values()), sum(len(b) for b in late.values())


def trials(results: list[tuple[dict, float | None, int, float]]) -> list[Trial]:
    return [Trial(params, value, trades, roi) for params, value, trades, roi in results]


def optimize(strategy: str, live_params: dict | None, location: str, symbols: list[str], settings: Settings,
             since: int, until: int, objective: str = "sharpe", samples: int = 0, workers: int = 2,
             in_sample_share: float = 0.7, progress: Callable[[str], None] | None = None,
             log: Logger | None = None, sampler: Sampler | None = None, seed: int | None = None,
             warm_start: Sequence[dict] = ()) -> Optimization:
    """Search the strategy's parameters in sample, check the best against the live set out of sample, where
    research runs (meshtrader.research.cluster: `workers` local processes, or the Dask cluster).

    `sampler` and `seed` default to MESH_OPTIMIZE_SAMPLER and MESH_OPTIMIZE_SEED; `warm_start` is the `study`
    of an earlier optimisation of the strategy, whose trials the sampler starts from."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
    started = time.perf_counter()
    seed = settings.optimize_seed if seed is None else seed
    search = ParameterSearch(REGISTRY[strategy].search_space, samples, rejection(strategy),
                             sampler or settings.optimize_sampler, seed, warm_start)
    live = dict(create(strategy, symbols[0], live_params).params.model_dump())
    run = TrialRun(BarSource(location, tuple(symbols), settings.timeframe, since, until), settings, objective,
                   in_sample_share)
    evaluated: list[Trial] = []
    with research_executor(settings, workers, log) as executor:
        (bars_in, bars_out), = executor.map(segment_sizes, run, [None])
        if progress:
            progress(f"{strategy}: {search.budget} parameter sets ({search.sampler}) x {bars_in} bars in sample "
                     f"on {executor.where}")
        while batch := search.ask():  # a round of sets, run in parallel, told in the order asked
            judged = trials(executor.map(run_trial, run, [(strategy, params, 0) for params in batch]))
            search.tell([t.score for t in judged])
            evaluated += judged
            crossed = len(evaluated) % PROGRESS_EVERY < len(batch)  # this round passed a multiple of PROGRESS_EVERY
            if log and crossed and len(evaluated) < search.budget:
                log.info("optimization_progress", strategy=strategy, sampler=search.sampler, trials=len(evaluated),
                         of=search.budget, best=min(evaluated, key=rank_key).score)
        ranked = sorted(evaluated, key=rank_key)
        best = ranked[0] if ranked else Trial(live, None, 0, 0.0)
        best_out, live_out = trials(executor.map(run_trial, run, [(strategy, best.params, 1),
                                                                  (strategy, live_params or {}, 1)]))
    best_params = dict(create(strategy, symbols[0], best.params).params.model_dump())
    adopt = (best_params != live and best_out.score is not None
             and (live_out.score is None or best_out.score > live_out.score))
    verdict = "adopt" if adopt else "keep the live set"
    reason = (f"{strategy} walk-forward by {objective}: best of {len(evaluated)} sets ({search.sampler}) in sample "
              f"{_fmt(best.score)}, out of sample {_fmt(best_out.score)} vs live {_fmt(live_out.score)}: {verdict}")
    return Optimization(strategy=strategy, objective=objective, trials=len(evaluated), bars_in_sample=bars_in,
                        bars_out_of_sample=bars_out, best_params=best_params, best_in_sample=best.score,
                        best_out_of_sample=best_out.score, live_params=live, live_out_of_sample=live_out.score,
                        adopt=adopt, reason=reason, seconds=round(time.perf_counter() - started, 3),
                        workers=executor.workers,
                        top=[{"params": t.params, "score": t.score, "trades": t.trades} for t in ranked[:5]],
                        sampler=search.sampler, seed=seed, study=search.stored())


def _fmt(value: float | None) -> str:
    return "n/a (too few trades)" if value is None else f"{value:.3f}"
