"""The vectorized sweep against the event-driven backtester."""
from __future__ import annotations

from meshtrader.marketdata.files import find_candle_file, load_bars
from meshtrader.runtime.config import REPO_ROOT, load_settings


def test_vectorized_sweep_finds_the_event_paths_trades():
    import numpy as np

    from meshtrader.research.backtest import Backtester
    from meshtrader.research.sweep import sweep_sma_cross

    bars = load_bars(find_candle_file(REPO_ROOT / "data", "BTCUSDT"))[0][:6000]
    settings = load_settings(max_order_pct=1, daily_loss_pct=1, strategy_drawdown_pct=1)
    for fast, slow in ((5, 20), (10, 30), (20, 60)):
        report = Backtester({"sma_cross": {"fast": fast, "slow": slow}}, ["BTCUSDT"], settings).run({"BTCUSDT": bars})
        swept = sweep_sma_cross(np.array([b.close for b in bars]), [fast], [slow])[0]
        closes_at = [b.open_time + 60_000 for b in bars]
        assert [closes_at[i] for i in swept.entries] == [f.event_time for f in report.fills if f.side == "buy"]
        assert [closes_at[i] for i in swept.exits] == [f.event_time for f in report.fills if f.side == "sell"]
        assert swept.trades == report.trades > 10
