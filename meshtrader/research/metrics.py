"""Risk-adjusted figures of an equity curve: the ones a trader reads, and the one the allocator ranks by.

- Sharpe and Sortino of DAILY returns, as QuantStats (periods=365) computes them: the curve resampled to the
  equity at each UTC day's last bar, the returns from one day's end to the next (the first day counts when
  the curve holds all of it: from the equity it starts with), annualised with sqrt(365) (crypto trades every
  day, as Freqtrade annualises too). Sharpe = mean / sample standard deviation (ddof 1); Sortino =
  mean / sqrt(sum of the losing days' squares / number of days). Each rests on a number of days, said with
  it; under MIN_DAYS daily returns neither is defined (None), never a figure from minutes annualised (a
  1-day validation once printed "Sharpe -155.96").
- The per-bar Sharpe and Sortino: the same ratios of the bar-by-bar returns, NOT annualised. Defined on any
  window of 2 bars or more, so the allocator can rank strategies on 12-hour validations; only their order
  within a window means something (the allocator standardises them per window).
"""
from __future__ import annotations

import math

DAY_MS = 86_400_000
DAYS_PER_YEAR = 365
MIN_DAYS = 2  # daily returns a daily ratio needs: one return has no spread

# The objectives whose daily figure needs days: what ranks by them on any window
RANKED_BY = {"sharpe": "bar_sharpe", "sortino": "bar_sortino"}


def day_end_values(curve: list[float], tf_ms: int, first_open_ms: int, start: float) -> list[float]:
    """The curve's value at each UTC day's last bar (bar i opened at first_open_ms + i * tf_ms), after `start`,
    the value before the first bar, when the first bar opens the day (the previous day ended with it)."""
    values = [start] if curve and first_open_ms % DAY_MS == 0 else []
    last = len(curve) - 1
    day_end = (first_open_ms // DAY_MS + 1) * DAY_MS
    while last >= 0:
        index = -(-(day_end - first_open_ms) // tf_ms) - 1  # the last bar that opened before the day ended
        if index >= last:
            values.append(curve[last])
            break
        values.append(curve[index])
        day_end += DAY_MS
    return values


def simple_returns(values: list[float]) -> list[float]:
    """From each value to the next (a value of 0 has no return after it)."""
    return [b / a - 1 for a, b in zip(values, values[1:], strict=False) if a]


def daily_ratios(day_ends: list[float]) -> dict[str, float | int | None]:
    """Annualised Sharpe and Sortino of the returns between day ends, and how many days they rest on; None
    where not defined (under MIN_DAYS days, days that do not vary, no losing day for the Sortino)."""
    daily = simple_returns(day_ends)
    days = len(daily)
    if days < MIN_DAYS:
        return {"sharpe": None, "sortino": None, "days": days}
    mean = sum(daily) / days
    std = math.sqrt(sum([(r - mean) ** 2 for r in daily]) / (days - 1))
    downside = math.sqrt(sum([r * r for r in daily if r < 0.0]) / days)
    per_year = math.sqrt(DAYS_PER_YEAR)
    return {"sharpe": round(mean / std * per_year, 6) if std else None,
            "sortino": round(mean / downside * per_year, 6) if downside else None, "days": days}


def bar_ratios(curve: list[float]) -> dict[str, float]:
    """Per-bar Sharpe (mean bar return over its population standard deviation) and Sortino (over the root mean
    square of the losses), not annualised; 0 where the curve has no return or no risk to divide by."""
    bars = simple_returns(curve)
    if not bars:
        return {"bar_sharpe": 0.0, "bar_sortino": 0.0}
    n = len(bars)
    mean = sum(bars) / n
    std = math.sqrt(sum([(r - mean) ** 2 for r in bars]) / n)
    downside = math.sqrt(sum([r * r for r in bars if r < 0.0]) / n)  # gains add nothing
    return {"bar_sharpe": round(mean / std, 8) if std else 0.0,
            "bar_sortino": round(mean / downside, 8) if downside else 0.0}


def max_drawdown(curve: list[float]) -> float:
    """The deepest fall from a peak, a fraction of the peak."""
    peak, drawdown = curve[0] if curve else 0.0, 0.0
    for value in curve:
        if value > peak:
            peak = value
        elif peak and (fall := 1 - value / peak) > drawdown:
            drawdown = fall
    return round(drawdown, 8)


def ranking_figure(objective: str) -> str:
    """The report figure that ranks by `objective` on a window of any length."""
    return RANKED_BY.get(objective, objective)


def shown(ratio: float | None, days: int) -> str:
    """A daily ratio as people read it, with the days it rests on: "1.23 (14 days)", "n/a (1 day)"."""
    rests_on = f"{days} day" if days == 1 else f"{days} days"
    return f"n/a ({rests_on})" if ratio is None else f"{ratio:.2f} ({rests_on})"
