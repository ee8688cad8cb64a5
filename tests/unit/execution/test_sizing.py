"""Volatility-targeted and confidence-scaled sizing: the same rule in the mesh's planning and the backtester."""
from __future__ import annotations

import math
from decimal import Decimal as D

from meshtrader.domain.candles import Bar
from meshtrader.domain.indicators import RealisedVolatility
from meshtrader.domain.portfolio import Portfolio
from meshtrader.execution.planning import OrderRules, plan_order
from meshtrader.research.backtest import Backtester
from meshtrader.runtime.config import Settings
from tests.support.candles import bundled_candles


def rules(**changes) -> OrderRules:
    return OrderRules.from_settings(Settings(**changes))


def test_the_entry_share_targets_a_daily_move_within_the_order_cap():
    volatility = rules(sizing="volatility", vol_target_pct=D("0.005"))
    assert volatility.entry_share(1.0, 0.02, D(1)) == D("0.10")  # 0.005 / 2% = 25%: capped at 10%
    assert volatility.entry_share(1.0, 0.10, D(1)) == D("0.05")  # 0.005 / 10% = 5% of equity
    assert volatility.entry_share(1.0, 0.10, D(2)) == D("0.025")  # as margin: the position is twice that
    assert volatility.entry_share(1.0, 0.0, D(1)) == D("0.10")  # no volatility known yet: the fixed share
    confident = rules(confidence_sizing=True)
    assert confident.entry_share(0.5, 0.0, D(1)) == D("0.05")
    assert confident.entry_share(7.0, 0.0, D(1)) == D("0.10")  # a confidence is at most 1


def test_a_planned_entry_uses_the_share():
    books = Portfolio()
    books.fund("s", D("10000"))
    books.mark("BTCUSDT", D("100000"))
    fixed = plan_order(books, "s", "BTCUSDT", "buy", rules(slippage_bp=D(0)))
    halved = plan_order(books, "s", "BTCUSDT", "buy", rules(slippage_bp=D(0), confidence_sizing=True), confidence=0.5)
    assert (fixed.qty, halved.qty) == (D("0.009"), D("0.004"))


def test_realised_volatility_is_the_daily_standard_deviation_of_log_returns():
    tracker = RealisedVolatility(3, 60_000)
    for close in (100.0, 101.0, 100.0, 102.0):
        tracker.update(close)
    returns = [math.log(101 / 100), math.log(100 / 101), math.log(102 / 100)]
    mean = sum(returns) / 3
    assert tracker.value == math.sqrt(sum((r - mean) ** 2 for r in returns) / 2 * 1440)


def test_the_backtester_sizes_by_volatility_when_asked():
    candles = bundled_candles("BTCUSDT", 600)
    series = {"BTCUSDT": [Bar(c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in candles]}
    fixed = Backtester({"sma_cross": None}, ["BTCUSDT"], Settings()).run(series)
    targeted = Backtester({"sma_cross": None}, ["BTCUSDT"], Settings(sizing="volatility", vol_lookback=20,
                                                                       vol_target_pct=D("0.0005"))).run(series)
    first = lambda report: D(next(f.qty for f in report.fills if f.side == "buy"))  # noqa: E731
    assert first(targeted) < first(fixed)
