"""Candles built from trades and resampled."""
from __future__ import annotations

from meshtrader.domain.candles import Bar


def test_candles_built_from_trades_have_no_holes():
    from meshtrader.marketdata.trade_bars import MarketTrade, TradeBars

    builder = TradeBars(60_000)
    closed = []
    for t in (MarketTrade(1_000, 10.0, 1, "1"), MarketTrade(30_000, 12.0, 2, "2"), MarketTrade(59_999, 9.0, 1, "3"),
              MarketTrade(185_000, 11.0, 1, "4")):
        closed += builder.add(t)
    assert closed == [Bar(0, 10.0, 12.0, 9.0, 9.0, 4.0), Bar(60_000, 9.0, 9.0, 9.0, 9.0, 0.0),
                      Bar(120_000, 9.0, 9.0, 9.0, 9.0, 0.0)]
    assert builder.current.open_time == 180_000


def test_resampling_keeps_only_whole_periods():
    from meshtrader.domain.candles import resample

    minutes = [Bar(t * 60_000, 10 + t, 20 + t, 5 + t, 11 + t, 1.0) for t in range(2, 13)]  # 00:02 .. 00:12
    five = resample(minutes, 300_000)
    assert [b.open_time for b in five] == [300_000]  # 00:00 lacks its first bars but closes; 00:10 is unfinished
    assert five[0] == Bar(300_000, 15, 29, 10, 20, 5.0)
