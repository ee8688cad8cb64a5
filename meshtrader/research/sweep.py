"""Vectorized parameter sweeps (numpy) for the strategies whose signals are array expressions.

It finds the same trades as the event path (same bars, same sides) for a whole grid at once, and
values them with the paper rules' fee and slippage compounding `order_pct` of equity per entry; it is
for ranking configurations quickly. The event backtester stays the reference for the exact books.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np


@dataclass(frozen=True)
class SweepResult:
    fast: int
    slow: int
    trades: int
    roi: float
    entries: np.ndarray  # bar indices of buys
    exits: np.ndarray  # bar indices of sells


def rolling_means(close: np.ndarray, windows: set[int]) -> dict[int, np.ndarray]:
    """Simple moving averages by window (NaN until warm), from one cumulative sum."""
    cumulative = np.concatenate(([0.0], np.cumsum(close)))
    means = {}
    for window in windows:
        mean = np.full(close.shape, np.nan)
        mean[window - 1:] = (cumulative[window:] - cumulative[:-window]) / window
        means[window] = mean
    return means


def sma_cross_trades(fast_mean: np.ndarray, slow_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bars where a long opens (fast crosses above slow) and where it closes (crosses below)."""
    diff = fast_mean - slow_mean
    previous, current = diff[:-1], diff[1:]
    valid = ~(np.isnan(previous) | np.isnan(current))
    ups = np.flatnonzero(valid & (previous <= 0) & (current > 0)) + 1
    downs = np.flatnonzero(valid & (previous >= 0) & (current < 0)) + 1
    entries, exits = [], []
    holding = False
    events = np.concatenate((ups, downs))
    kinds = np.concatenate((np.ones(len(ups), bool), np.zeros(len(downs), bool)))
    for index in np.argsort(events, kind="stable"):
        if kinds[index] and not holding:
            entries.append(events[index])
            holding = True
        elif not kinds[index] and holding:
            exits.append(events[index])
            holding = False
    return np.array(entries, dtype=np.int64), np.array(exits, dtype=np.int64)


def sweep_sma_cross(close: np.ndarray, fasts: list[int], slows: list[int], order_pct: float = 0.1,
                    fee_rate: float = 0.0005, slippage_bp: float = 5.0) -> list[SweepResult]:
    """Every fast x slow SMA crossover on one close series at once; `fee_rate` is the taker fee (a fraction),
    as market orders pay."""
    means = rolling_means(close, set(fasts) | set(slows))
    slip = slippage_bp / 10_000
    results = []
    for fast, slow in product(fasts, slows):
        if fast >= slow:
            continue
        entries, exits = sma_cross_trades(means[fast], means[slow])
        paired = min(len(entries), len(exits))
        buy = close[entries[:paired]] * (1 + slip)
        sell = close[exits[:paired]] * (1 - slip)
        per_trade = sell * (1 - fee_rate) / (buy * (1 + fee_rate)) - 1
        roi = float(np.prod(1 + order_pct * per_trade) - 1)
        results.append(SweepResult(fast, slow, len(entries) + len(exits), roi, entries, exits))
    return results
