"""The allocator's judgement of a validation: ranked on the per-bar Sharpe (a 12-hour window has no daily
one), an edge only from ROI after fees over the windows that traded enough."""
from __future__ import annotations

import pytest

from meshtrader.research.backtest import Report
from meshtrader.research.validation import Validation, judge


def report(roi: float, bar_sharpe: float, trades: int, win_rate: float = 0.5, profit_factor: float = 1.2) -> Report:
    return Report(strategies=["x"], symbols=["BTCUSDT"], bars=720, trades=trades, roi=roi, sharpe=None, sortino=None,
                  max_drawdown=0.01, win_rate=win_rate, profit_factor=profit_factor, exposure=0.3, fees=1.0,
                  start_equity=100_000.0, final_equity=100_000.0 * (1 + roi), rejected=0, days=0,
                  bar_sharpe=bar_sharpe)


def test_scores_rank_on_the_per_bar_sharpe_and_edges_come_from_roi_after_fees():
    twelve_hours = {"a": report(0.01, 0.02, 5), "b": report(0.05, 0.09, 1)}  # b: one trade says nothing
    one_day = {"a": report(0.02, 0.01, 9, 0.6, 2.0), "b": report(-0.01, -0.03, 8, 0.3, 0.5)}
    judged = judge(Validation([twelve_hours, one_day], []), [0.6, 0.4], 0.7, 0.5, learned={})
    assert judged.scores["a"] > judged.scores["b"]
    assert judged.rois == {"a": pytest.approx(0.014), "b": pytest.approx(-0.004)}  # b's 12 h window counts 0
    assert judged.kelly == {"a": pytest.approx(0.3), "b": pytest.approx(-0.3)}  # p (1 - 1/PF), longest window
    tilted = judge(Validation([twelve_hours, one_day], []), [0.6, 0.4], 0.7, 0.5, learned={"a": -1.0, "b": 1.0})
    assert tilted.scores["a"] - tilted.scores["b"] == pytest.approx(judged.scores["a"] - judged.scores["b"] - 1.0)
