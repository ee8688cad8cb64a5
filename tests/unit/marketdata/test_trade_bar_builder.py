"""Candles built from trades (meshtrader.marketdata.trade_bars): the interval rules, empty intervals,
late and repeated trades, the exchange's clock; and the bundled trade tape rebuilt into the OHLCV computed
straight from it."""
from __future__ import annotations

import pytest

from meshtrader.domain.candles import Bar, resample, timeframe_ms
from meshtrader.marketdata.files import find_series_file, load_trades
from meshtrader.marketdata.trade_bars import MarketTrade, TradeBars
from meshtrader.runtime.config import BUNDLED_DATA


def feed(builder: TradeBars, trades: list[MarketTrade]) -> list[Bar]:
    return [bar for trade in trades for bar in builder.add(trade) or []]


def test_fifteen_second_bars_from_trades():
    builder = TradeBars(timeframe_ms("15s"))
    bars = feed(builder, [
        MarketTrade(1_000, 10.0, 1.0, "a"), MarketTrade(9_000, 12.0, 2.0, "b"),
        MarketTrade(4_000, 9.0, 1.0, "c"),    # arrived late within its bar: a low, not the close
        MarketTrade(15_000, 11.0, 1.0, "d"),  # exactly at the end of the first bar: the next one's open
        MarketTrade(52_000, 13.0, 0.5, "e"),  # nothing traded in 30-45 s: a flat bar at the last close
    ])
    assert bars == [Bar(0, 10.0, 12.0, 9.0, 12.0, 4.0), Bar(15_000, 11.0, 11.0, 11.0, 11.0, 1.0),
                    Bar(30_000, 11.0, 11.0, 11.0, 11.0, 0.0)]
    assert builder.current.bar() == Bar(45_000, 13.0, 13.0, 13.0, 13.0, 0.5)


def test_repeated_and_late_trades_never_revise_a_closed_bar():
    builder = TradeBars(15_000)
    bars = feed(builder, [MarketTrade(1_000, 10.0, 1.0, "1"), MarketTrade(16_000, 11.0, 1.0, "2")])
    assert feed(builder, [MarketTrade(1_000, 10.0, 1.0, "1"),      # a reconnect's snapshot repeats it
                          MarketTrade(16_000, 11.0, 1.0, "2"),
                          MarketTrade(14_000, 50.0, 9.0, "late")]) == []  # its bar closed already
    assert (builder.duplicates, builder.late) == (2, 1)
    assert builder.add(MarketTrade(14_000, 50.0, 9.0, "late")) is None
    assert bars == [Bar(0, 10.0, 10.0, 10.0, 10.0, 1.0)] and builder.current.bar().volume == 1.0


def test_bars_close_on_the_exchanges_clock_after_the_grace_period():
    builder = TradeBars(15_000, grace_ms=2_000)
    builder.add(MarketTrade(3_000, 10.0, 1.0, None))
    assert builder.close_due(16_999) == []  # the bar ended at 15 s: trades stamped before may still come
    assert builder.close_due(17_000) == [Bar(0, 10.0, 10.0, 10.0, 10.0, 1.0)]
    assert builder.close_due(46_999) == [Bar(15_000, 10.0, 10.0, 10.0, 10.0, 0.0)]  # quiet: flat
    assert builder.add(MarketTrade(29_000, 99.0, 1.0, None)) is None  # too late for the bar closed
    assert feed(builder, [MarketTrade(61_000, 11.0, 1.0, None)]) == [Bar(30_000, 10.0, 10.0, 10.0, 10.0, 0.0),
                                                                     Bar(45_000, 10.0, 10.0, 10.0, 10.0, 0.0)]


def test_a_builder_resumes_a_series_without_a_hole_or_an_overlap():
    fresh = TradeBars(15_000)
    assert fresh.close_due(10**9) == []  # no trade yet: no price to be flat at
    resumed = TradeBars(15_000, closed_until=15_000, last_close=7.0)
    assert feed(resumed, [MarketTrade(20_000, 1.0, 1.0, None), MarketTrade(50_000, 2.0, 1.0, None)]) == \
        [Bar(30_000, 7.0, 7.0, 7.0, 7.0, 0.0)]
    assert resumed.late == 1


@pytest.mark.parametrize("tf", ["15s", "1m"])
def test_the_bundled_trade_tape_rebuilds_into_its_own_ohlcv(tf):
    """Bars from the bundled Binance trades equal the OHLCV computed straight from them; intervals without
    a trade are flat at the previous close."""
    tf_ms = timeframe_ms(tf)
    tape = load_trades(find_series_file(BUNDLED_DATA, "BTCUSDT", "trades"))
    builder = TradeBars(tf_ms)
    bars = feed(builder, [MarketTrade(t.time, t.price, t.qty, str(i)) for i, t in enumerate(tape)])
    by_interval: dict[int, list] = {}
    for trade in tape:
        by_interval.setdefault(trade.time - trade.time % tf_ms, []).append(trade)
    direct = {start: Bar(start, ts[0].price, max(t.price for t in ts), min(t.price for t in ts), ts[-1].price,
                         sum(t.qty for t in ts)) for start, ts in by_interval.items()}
    last = max(direct)
    assert [b.open_time for b in bars] == list(range(min(direct), last, tf_ms))  # all but the one still open
    for previous, bar in zip(bars, bars[1:], strict=False):
        assert bar == direct.get(bar.open_time, Bar(bar.open_time, *[previous.close] * 4, 0.0))
    assert bars[0] == direct[bars[0].open_time] and builder.current.bar() == direct[last]
    assert len(bars) > (9 if tf == "1m" else 40)


def test_four_fifteen_second_bars_make_the_minute():
    tape = [MarketTrade(t.time, t.price, t.qty, str(i))
            for i, t in enumerate(load_trades(find_series_file(BUNDLED_DATA, "ETHUSDT", "trades")))]
    quarters = resample(feed(TradeBars(15_000), tape), 60_000, source_ms=15_000)
    minutes = feed(TradeBars(60_000), tape)
    assert len(quarters) > 9 and [q[:5] for q in quarters] == [m[:5] for m in minutes if m.open_time >= quarters[0][0]]
    assert [q.volume for q in quarters] == pytest.approx([m.volume for m in minutes if m.open_time >= quarters[0][0]])


@pytest.mark.parametrize("exchange_id, transport, tf, source", [
    ("binance", "auto", "1m", "klines"),
    ("binance", "auto", "15s", "trades"),        # no kline stream under a minute
    ("binance", "trades", "1m", "trades"),       # MESH_FEED_TRANSPORT=trades
    ("binance", "rest", "15s", "rest"),
    ("coinbase", "auto", "1m", "trades"),        # ccxt.pro's coinbase has no watchOHLCV
    ("coinbase", "websocket", "1m", "rest"),     # klines asked for, and there are none
])
def test_where_candles_come_from(exchange_id, transport, tf, source):
    import zmq

    from meshtrader.marketdata.live import LiveMarketData
    from meshtrader.runtime.log import Logger

    live = LiveMarketData(exchange_id, None, ["BTCUSDT"], tf, "inproc://x", zmq.Context.instance(),
                          Logger("t", "ERROR"), lambda *_: None, transport=transport)
    exchange = live.exchange()
    assert live.source == source
    assert exchange.newUpdates is (source == "trades")  # trades are taken once each
