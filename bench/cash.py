"""The cash line on the bundled month: the meta-allocator walking forward with it and without it, in one run.

Every day at 00:00 UTC, from the first one with LONGEST_WINDOW days of candles behind it, every strategy is
validated on the days before (windows of WINDOWS_DAYS, as the allocator's fork validations:
research.validation.validate_here) and judged (research.validation.judge), and the allocator's decision
(domain.allocation.allocate) is made twice from the same judgement: with MESH_ALLOC_CASH_MAX_PCT's cap, and
with a cap of 0, fully invested as before the cash line. Each portfolio then trades the next day from the
equity it has reached (research.backtest.run_allocation: its cash line held aside); the days chain into one
equity curve per portfolio, whose ROI, daily Sharpe and Sortino (with their days), max drawdown and
per-bar Sharpe are printed side by side, with the difference.

Left out, the same for both: the what-if step (it could publish the current or the equal allocation instead),
the regime table (learned over many validations), the risk guard's state across days; each day starts flat
(positions still open at a day's end are valued at its last close, not carried) and the strategies warm up
again. The validations get no funding rates, as on a fork; the traded days get them, as the mesh's workers do.
"""
from __future__ import annotations

import sys
import time
from bisect import bisect_left
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from meshtrader.domain.allocation import AllocationRules, allocate, split_cash
from meshtrader.domain.candles import Bar, timeframe_ms
from meshtrader.marketdata.files import find_candle_file, find_series_file, load_bars, load_funding
from meshtrader.research.backtest import ratios, run_allocation
from meshtrader.research.metrics import DAY_MS, shown
from meshtrader.research.validation import judge, validate_here
from meshtrader.runtime.config import BUNDLED_DATA, load_settings
from meshtrader.strategies import REGISTRY

SYMBOLS = ("BTCUSDT", "ETHUSDT")
WINDOWS_DAYS = (1, 3, 7)  # validation windows, the most recent first (the allocator sorts its windows so)
WINDOW_WEIGHTS = [0.5, 0.3, 0.2]
LONGEST_WINDOW = max(WINDOWS_DAYS)
PORTFOLIOS = ("with_cash", "fully_invested")


def between(series: dict[str, list[Bar]], times: dict[str, list[int]], since: int,
            until: int) -> dict[str, list[Bar]]:
    """The bars that opened in [since, until), per symbol (`times`: their open times, in order)."""
    return {symbol: bars[bisect_left(times[symbol], since):bisect_left(times[symbol], until)]
            for symbol, bars in series.items()}


def figures(curve: list[float], start: float, tf_ms: int, first_open: int) -> dict:
    return {"roi": round(curve[-1] / start - 1, 6), **ratios(curve, tf_ms, first_open, start)}


def run_cash_suite(progress: bool = True) -> dict:
    started = time.perf_counter()
    settings = load_settings()
    series = {s: load_bars(find_candle_file(BUNDLED_DATA, s))[0] for s in SYMBOLS}
    times = {s: [b.open_time for b in bars] for s, bars in series.items()}
    funding = {s: load_funding(path) for s in SYMBOLS if (path := find_series_file(BUNDLED_DATA, s, "funding"))}
    strategies: dict[str, dict | None] = {name: None for name in REGISTRY if name != "bench"}  # bench: a test tool
    rules = AllocationRules.from_settings(settings)
    decide = {"with_cash": rules, "fully_invested": replace(rules, cash_max_pct=Decimal(0))}
    tf_ms = timeframe_ms(settings.timeframe)
    history_from = max(bars[0].open_time for bars in series.values())
    end = min(bars[-1].open_time for bars in series.values()) + tf_ms
    first_day = -(-(history_from + LONGEST_WINDOW * DAY_MS) // DAY_MS) * DAY_MS
    capital = float(settings.capital)
    equity = dict.fromkeys(PORTFOLIOS, capital)
    curves: dict[str, list[float]] = {name: [] for name in PORTFOLIOS}
    cash_shares: list[Decimal] = []
    if progress:
        print(f"cash line (at most {rules.cash_max_pct * 100:g}%): {len(strategies)} strategies validated over "
              f"{', '.join(f'{d}d' for d in WINDOWS_DAYS)} every day, then trading it", file=sys.stderr)
    day = first_day
    while day < end:
        past = between(series, times, day - LONGEST_WINDOW * DAY_MS, day)
        validation = validate_here(strategies, past, [day - d * DAY_MS for d in WINDOWS_DAYS], settings)
        judged = judge(validation, WINDOW_WEIGHTS, settings.correlation_max, settings.regime_weight, learned={})
        today = between(series, times, day, day + DAY_MS)
        decisions = {name: allocate(judged.scores, judged.kelly, judged.rois, [], decide[name]).weights
                     for name in PORTFOLIOS}
        invested, held = split_cash(decisions["with_cash"])
        cash_shares.append(held)
        said = []
        for name, weights in decisions.items():
            run = run_allocation(strategies, weights, today, settings.model_copy(
                update={"capital": Decimal(repr(round(equity[name], 2)))}), funding)
            curves[name] += run.curve
            said.append(f"{name} {(run.final_equity / equity[name] - 1) * 100:+.2f}%")
            equity[name] = run.final_equity
        if progress:
            print(f"  {datetime.fromtimestamp(day / 1000, UTC):%Y-%m-%d}: cash {cash_shares[-1] * 100:4.1f}%, "
                  f"invested in {', '.join(f'{n} {w * 100:.0f}%' for n, w in invested.items() if w)}; "
                  f"the day: {', '.join(said)}", file=sys.stderr)
        day += DAY_MS
    results = {name: figures(curves[name], capital, tf_ms, first_day) for name in PORTFOLIOS}
    with_cash, invested_only = results["with_cash"], results["fully_invested"]
    difference = {key: round(with_cash[key] - invested_only[key], 6)
                  for key in ("roi", "sharpe", "sortino", "max_drawdown", "bar_sharpe")
                  if with_cash[key] is not None and invested_only[key] is not None}
    if progress:
        for name in PORTFOLIOS:
            r = results[name]
            print(f"{name:15} ROI {r['roi'] * 100:+7.2f}%  Sharpe {shown(r['sharpe'], r['days']):>16}  "
                  f"Sortino {shown(r['sortino'], r['days']):>16}  max drawdown {r['max_drawdown'] * 100:5.2f}%",
                  file=sys.stderr)
        print(f"{'difference':15} ROI {difference['roi'] * 100:+7.2f} points, max drawdown "
              f"{difference['max_drawdown'] * 100:+.2f} points" + (f", Sharpe {difference['sharpe']:+.2f}"
                                                                   if "sharpe" in difference else ""), file=sys.stderr)
    return {"strategies": list(strategies), "windows_days": list(WINDOWS_DAYS), "window_weights": WINDOW_WEIGHTS,
            "cash_max_pct": float(rules.cash_max_pct),
            "from": datetime.fromtimestamp(first_day / 1000, UTC).isoformat(),
            "to": datetime.fromtimestamp(end / 1000, UTC).isoformat(), "days_traded": len(cash_shares),
            "mean_cash_pct": round(float(sum(cash_shares) / len(cash_shares)) * 100, 2) if cash_shares else 0.0,
            **results, "difference": difference, "seconds": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    import json

    print(json.dumps(run_cash_suite(), indent=2))
