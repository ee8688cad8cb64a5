"""Figures a trader can read: Sharpe and Sortino of daily returns, annualised with 365 days, with the days
they rest on; not defined under 2 days; the per-bar ratios the allocator ranks by on any window."""
from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from meshtrader.marketdata.files import find_candle_file, load_bars
from meshtrader.research.backtest import Backtester, ratios, simulate_allocations
from meshtrader.research.metrics import DAY_MS, day_end_values, ranking_figure, shown
from meshtrader.runtime.config import BUNDLED_DATA, load_settings

HOUR_MS = 3_600_000
MAY_10 = int(datetime(2025, 5, 10, tzinfo=UTC).timestamp() * 1000)  # a UTC midnight inside the bundled month


def test_daily_resampling_takes_each_utc_days_last_bar():
    # 6-hour bars from 12:00: day 0 holds 12:00 and 18:00, day 1 four bars, day 2 the last two (a partial day)
    curve = [100.0, 101.0, 102.0, 99.0, 103.0, 104.0, 106.0, 105.0]
    assert day_end_values(curve, 6 * HOUR_MS, MAY_10 + 12 * HOUR_MS, start=100.0) == [101.0, 104.0, 105.0]
    # from 00:00 the curve holds the whole first day: it counts, from the equity the curve starts with
    assert day_end_values([101.0, 102.0, 101.0, 103.0, 104.0], 6 * HOUR_MS, MAY_10, start=100.0) == [100.0, 103.0, 104.0]
    # with no first bar time, days are 24 hours from the first bar
    assert day_end_values([float(v) for v in range(1, 50)], HOUR_MS, 0, start=0.5) == [0.5, 24.0, 48.0, 49.0]


def test_sharpe_and_sortino_by_hand_annualised_with_365_days():
    # 6-hour bars from midnight: day ends 103, 106, 107 after a start of 100
    figures = ratios([100.0, 102.0, 101.0, 103.0, 104.0, 102.0, 105.0, 106.0, 107.0], 6 * HOUR_MS, MAY_10, 100.0)
    # r = 3%, 2.9126%, 0.9434%: mean 2.28534%, sample standard deviation 1.16298%; no losing day
    assert figures["days"] == 3
    assert figures["sharpe"] == pytest.approx(0.022853392 / 0.011629776 * math.sqrt(365), rel=1e-6)
    assert figures["sharpe"] == pytest.approx(37.542721, abs=1e-5)
    assert figures["sortino"] is None, "no losing day: nothing to divide by"
    # daily bars: -2%, +1%, +3%, -1%
    daily = ratios([98.0, 98.98, 101.9494, 100.929906], DAY_MS, MAY_10, 100.0)
    assert daily["days"] == 4
    # mean 0.25%; deviations -2.25, 0.75, 2.75, -1.25 points: sample standard deviation sqrt(14.75 / 3) = 2.21736%
    assert daily["sharpe"] == pytest.approx(0.0025 / 0.0221735578 * math.sqrt(365), rel=1e-6)  # 2.154027
    assert daily["sortino"] == pytest.approx(0.0025 / math.sqrt((0.02 ** 2 + 0.01 ** 2) / 4) * math.sqrt(365),
                                             rel=1e-6)  # 4.272002: the root mean square of the losses over all days


def test_ratios_match_the_quantstats_formulas_on_a_minute_curve():
    """QuantStats' sharpe (mean / std ddof=1) and sortino (mean / sqrt(sum of squared losses / n)) with
    periods=365, on the day-end equity of 1-minute bars starting mid-day."""
    rng = np.random.default_rng(7)
    first_open = MAY_10 + 13 * HOUR_MS + 17 * 60_000
    curve = list(10_000 * np.cumprod(1 + rng.normal(0.00002, 0.0008, 6 * 1440)))
    days = (first_open + np.arange(len(curve)) * 60_000) // DAY_MS
    last_of_day = np.flatnonzero(np.diff(days, append=days[-1] + 1))
    daily = np.diff(np.array(curve)[last_of_day]) / np.array(curve)[last_of_day][:-1]
    figures = ratios(curve, 60_000, first_open, 10_000.0)
    assert figures["days"] == len(daily) == 6  # seven UTC days touched, the first one partial: six returns
    assert figures["sharpe"] == pytest.approx(daily.mean() / daily.std(ddof=1) * math.sqrt(365), abs=1e-6)
    assert figures["sortino"] == pytest.approx(
        daily.mean() / math.sqrt((daily[daily < 0] ** 2).sum() / len(daily)) * math.sqrt(365), abs=1e-6)
    per_bar = np.diff(curve) / np.array(curve[:-1])
    assert figures["bar_sharpe"] == pytest.approx(per_bar.mean() / per_bar.std(), abs=1e-8)


def test_under_two_days_there_is_no_sharpe_and_the_report_says_so():
    one_day = ratios([100.0 + (i % 7) for i in range(1440)], 60_000, MAY_10 + 12 * HOUR_MS, 100.0)
    assert (one_day["sharpe"], one_day["sortino"], one_day["days"]) == (None, None, 1)
    assert one_day["bar_sharpe"] != 0.0, "the per-bar ratio is defined on any window"
    assert shown(one_day["sharpe"], one_day["days"]) == "n/a (1 day)"
    assert shown(None, 0) == "n/a (0 days)" and shown(-1.234, 12) == "-1.23 (12 days)"
    assert ratios([100.0], 60_000, MAY_10, 100.0)["sharpe"] is None
    assert ranking_figure("sharpe") == "bar_sharpe" and ranking_figure("roi") == "roi"


@pytest.fixture(scope="module")
def btc() -> list:
    bars, _ = load_bars(find_candle_file(BUNDLED_DATA, "BTCUSDT"))
    return bars


def window(bars: list, days: int) -> dict[str, list]:
    return {"BTCUSDT": [b for b in bars if MAY_10 <= b.open_time < MAY_10 + days * DAY_MS]}


def test_a_backtest_reports_daily_ratios_with_their_days(btc):
    settings = load_settings()
    one = Backtester({"momentum": None}, ["BTCUSDT"], settings).run(window(btc, 1))
    assert one.trades and (one.sharpe, one.sortino, one.days) == (None, None, 1)  # not "Sharpe -155.96"
    three = Backtester({"momentum": None}, ["BTCUSDT"], settings).run(window(btc, 3))
    assert three.days == 3 and isinstance(three.sharpe, float) and three.bar_sharpe < 0 < three.trades
    assert set(three.summary()) >= {"sharpe", "sortino", "days", "bar_sharpe", "bar_sortino"}


def test_what_if_figures_are_the_whole_capitals_with_the_cash_line_held_aside(btc):
    settings = load_settings()
    half = {"momentum": Decimal("0.25"), "macd": Decimal("0.25")}
    outcome = simulate_allocations({"momentum": None, "macd": None}, {
        "invested": {"momentum": Decimal("0.5"), "macd": Decimal("0.5")}, "half": {**half, "cash": Decimal("0.5")},
        "cash": {"momentum": Decimal(0), "macd": Decimal(0), "cash": Decimal(1)}}, window(btc, 1), settings)
    invested, held_half, all_cash = outcome["invested"], outcome["half"], outcome["cash"]
    assert invested["roi"] < 0 and held_half["roi"] == pytest.approx(invested["roi"] / 2, rel=0.05)
    assert held_half["max_drawdown"] == pytest.approx(invested["max_drawdown"] / 2, rel=0.05)
    assert (all_cash["roi"], all_cash["trades"], all_cash["max_drawdown"], all_cash["sharpe"]) == (0.0, 0, 0.0, None)
    assert held_half["days"] == invested["days"] == 1
