"""Equity curve and drawdown of a backtest, as a PNG."""
from __future__ import annotations

from pathlib import Path

from meshtrader.research.backtest import Report
from meshtrader.research.metrics import shown


def plot_equity(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report.equity_curve
    peak, drawdown = curve[0] if curve else 0.0, []
    for value in curve:
        peak = max(peak, value)
        drawdown.append((value / peak - 1) * 100 if peak else 0.0)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=(3, 1))
    top.plot(curve, color="#2e7d32", linewidth=1)
    top.set_title(f"{', '.join(report.strategies)} on {', '.join(report.symbols)}: ROI {report.roi * 100:.2f}%, "
                  f"Sharpe {shown(report.sharpe, report.days)}, {report.trades} trades")
    top.set_ylabel("equity")
    bottom.fill_between(range(len(drawdown)), drawdown, 0, color="#c62828", alpha=0.5)
    bottom.set_ylabel("drawdown %")
    bottom.set_xlabel("bar")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
