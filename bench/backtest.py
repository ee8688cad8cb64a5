"""Backtest figures, side by side in one run:

- the event-driven backtester on the bundled 30 days of 1m BTCUSDT candles: bars/s per strategy;
- the same SMA-crossover strategy in backtesting.py on the same data: bars/s, the ratio, and a check
  that both trade on the same bars;
- the vectorized sweep: configurations x bars per second.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from meshtrader.domain.candles import Bar
from meshtrader.marketdata.files import find_candle_file, load_bars
from meshtrader.research.backtest import Backtester
from meshtrader.research.sweep import sweep_sma_cross
from meshtrader.runtime.config import BUNDLED_DATA, load_settings
from meshtrader.strategies import REGISTRY

FAST, SLOW = 10, 30
REPEATS = 5


def best_rate(work, bars: int) -> float:
    """Bars per second of the fastest of REPEATS runs (the least disturbed by a noisy machine)."""
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return bars / best


def our_sma_cross_trades(bars: list[Bar]) -> tuple[list[int], list[int]]:
    settings = load_settings(taker_fee_bp=0, slippage_bp=0, max_order_pct=1, daily_loss_pct=1,
                             strategy_drawdown_pct=1)
    report = Backtester({"sma_cross": {"fast": FAST, "slow": SLOW}}, ["BTCUSDT"], settings).run({"BTCUSDT": bars})
    index = {b.open_time + 60_000: i for i, b in enumerate(bars)}
    return ([index[f.event_time] for f in report.fills if f.side == "buy"],
            [index[f.event_time] for f in report.fills if f.side == "sell"])


def backtesting_py(bars: list[Bar]):
    """backtesting.py's own SMA crossover, filling on the signal bar's close as ours does."""
    import pandas as pd
    from backtesting import Strategy
    from backtesting.lib import FractionalBacktest, crossover

    def sma(values, n):
        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):
        def init(self):
            self.fast = self.I(sma, self.data.Close, FAST)
            self.slow = self.I(sma, self.data.Close, SLOW)

        def next(self):
            if crossover(self.fast, self.slow):
                if not self.position:
                    self.buy(size=0.1)
            elif crossover(self.slow, self.fast):
                self.position.close()

    frame = pd.DataFrame({"Open": [b.open for b in bars], "High": [b.high for b in bars],
                          "Low": [b.low for b in bars], "Close": [b.close for b in bars],
                          "Volume": [b.volume for b in bars]},
                         index=pd.to_datetime([b.open_time for b in bars], unit="ms"))
    return FractionalBacktest(frame, SmaCross, cash=100_000, commission=0, trade_on_close=True,
                              finalize_trades=True)


def run_backtest_suite(progress: bool = True) -> dict:
    bars, _ = load_bars(find_candle_file(BUNDLED_DATA, "BTCUSDT"))
    settings = load_settings()
    per_strategy = {}
    for name in REGISTRY:
        if name == "bench":
            continue
        per_strategy[name] = round(best_rate(
            lambda name=name: Backtester({name: None}, ["BTCUSDT"], settings).run({"BTCUSDT": bars}), len(bars)))
        if progress:
            print(f"  event backtester {name:15} {per_strategy[name]:>10,} bars/s", file=sys.stderr)
    ours = round(best_rate(lambda: Backtester({"sma_cross": {"fast": FAST, "slow": SLOW}}, ["BTCUSDT"], settings)
                           .run({"BTCUSDT": bars}), len(bars)))
    result = {"event_bars_per_s": per_strategy, "sma_cross_bars_per_s": ours, "bars": len(bars)}
    try:
        backtest = backtesting_py(bars)
    except ImportError:
        result["backtesting_py"] = "not installed: pip install -e '.[bench]'"
    else:
        theirs = round(best_rate(backtest.run, len(bars)))
        trades = backtest.run()._trades
        entries, exits = our_sma_cross_trades(bars)
        result.update({
            "backtesting_py_bars_per_s": theirs, "ratio_vs_backtesting_py": round(ours / theirs, 2),
            "same_trades_as_backtesting_py": entries == [int(x) for x in trades["EntryBar"]]
            and exits[:len(trades)] == [int(x) for x in trades["ExitBar"]][:len(exits)],
            "trades_compared": len(trades)})
    close = np.array([b.close for b in bars])
    fasts, slows = list(range(5, 55, 5)), list(range(20, 220, 10))
    started = time.perf_counter()
    configs = len(sweep_sma_cross(close, fasts, slows))
    result["sweep_configs"] = configs
    result["sweep_config_bars_per_s"] = round(configs * len(bars) / (time.perf_counter() - started))
    result["targets"] = {"event_bars_per_s": 100_000, "ratio_vs_backtesting_py": 1.5, "sweep_config_bars_per_s": 2e6}
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(run_backtest_suite(), indent=2))
