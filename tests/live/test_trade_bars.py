"""Candles built from the trade stream, for real and offline: the feed's market-data code (LiveMarketData)
with the real ccxt.pro against `mesh exchange-sim` on 127.0.0.1. Coinbase Advanced Trade (no kline stream in
ccxt) streams 15 s candles from its `market_trades` channel and repairs a dropped connection from REST
trades; Binance does the same from its `trade` stream with MESH_FEED_TRANSPORT=trades, quiet intervals flat."""
from __future__ import annotations

import pytest
from conftest import chaos, wait_for
from support.live_tap import live_tap

from meshtrader.marketdata.trade_bars import MarketTrade, TradeBars
from meshtrader.runtime.config import BUNDLED_DATA
from meshtrader.wire.messages import Candle, Tick
from tools.exchange_sim.coinbase import candle_trades, product_id
from tools.exchange_sim.server import Market

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
QUARTER_MS = 15_000


@pytest.fixture(scope="module")
def market() -> Market:
    """The simulator's market over the bundled data: what the exchange traded, to check against."""
    return Market(BUNDLED_DATA, SYMBOLS, speed=1)


def assert_continuous(candles: list[Candle]) -> None:
    assert candles and all(c.tf == "15s" for c in candles)
    assert [b.open_time - a.open_time for a, b in zip(candles, candles[1:], strict=False)] == \
        [QUARTER_MS] * (len(candles) - 1), "a hole or a repeat in the series"


def test_the_simulators_coinbase_trades_rebuild_its_candles(market):
    """The simulator's Coinbase side trades each candle's open, extremes and close: the minute bars built
    from those trades are the data's candles (the volume split exactly in decimal, summed here in float)."""
    bars = market.bars["BTCUSDT"][:200]
    builder = TradeBars(60_000)
    built = [bar for b in bars for t in candle_trades(market, "BTCUSDT", b.open_time)
             for bar in builder.add(MarketTrade(t.time, t.price, float(t.size), t.trade_id)) or []]
    assert [b[:5] for b in built] == [b[:5] for b in bars[:-1]]
    assert [b.volume for b in built] == pytest.approx([b.volume for b in bars[:-1]], rel=1e-12)


def test_coinbase_streams_fifteen_second_candles_and_repairs_a_drop(sim, market):
    products = [product_id(s) for s in SYMBOLS]
    with live_tap("coinbase", sim, products, "15s") as tap:
        wait_for(lambda: all(len(tap.candles(p)) >= 20 for p in products), 20, "15 s candles from market_trades")
        chaos(sim, action="drop", seconds=1)  # longer than the 50 trades a reconnect's snapshot brings back
        wait_for(lambda: all(tap.gaps(p) for p in products), 20, "the drop repaired")
        after = {p: tap.candles(p)[-1].open_time for p in products}
        wait_for(lambda: all(tap.candles(p)[-1].open_time > after[p] + 20 * QUARTER_MS for p in products), 20,
                 "candles after the repair")
    for symbol, product in zip(SYMBOLS, products, strict=True):
        candles = tap.candles(product)
        assert_continuous(candles)
        traded = {t.time - t.time % QUARTER_MS: t for c in candles
                  for t in candle_trades(market, symbol, c.open_time - c.open_time % 60_000)}
        # the simulator trades once in each 15 s: every candle is that trade, exactly
        assert [(c.open, c.high, c.low, c.close, c.volume) for c in candles] == \
            [(t.price, t.price, t.price, t.price, float(t.size)) for t in (traded[c.open_time] for c in candles)]
        [gap] = tap.gaps(product)
        assert gap.backfilled > 0 and "REST trades" in gap.reason
    assert any(isinstance(e, Tick) and e.symbol == "BTC-USD" and e.qty > 0 for e in tap.events)


def test_binance_trade_stream_with_quiet_intervals_flat(sim, market):
    """MESH_FEED_TRANSPORT=trades on Binance: its simulator trades at 0, 20 and 40 s of each minute, so the
    fourth quarter of every minute is quiet and comes as a flat candle at the last price, volume 0."""
    with live_tap("binance", sim, ["BTCUSDT"], "15s", transport="trades") as tap:
        wait_for(lambda: len(tap.candles("BTCUSDT")) >= 24, 20, "15 s candles from the trade stream")
    candles = tap.candles("BTCUSDT")
    assert_continuous(candles)
    for candle in candles:
        minute = candle.open_time - candle.open_time % 60_000
        points = market.path("BTCUSDT", minute)
        quarter = (candle.open_time - minute) // QUARTER_MS
        price, volume = points[min(quarter, 2)][1], 0.001 if quarter < 3 else 0.0
        assert (candle.open, candle.high, candle.low, candle.close, candle.volume) == (price,) * 4 + (volume,)


def test_binance_trade_stream_repairs_a_drop_with_rest_candles(sim, market):
    """Where the exchange serves the timeframe as REST candles (Binance, 1m), a reconnect fetches the
    candles it doubts from REST, as the kline stream does; built candles resume after them."""
    with live_tap("binance", sim, ["BTCUSDT"], "1m", transport="trades") as tap:
        wait_for(lambda: len(tap.candles("BTCUSDT")) >= 2, 20, "1m candles from the trade stream")
        chaos(sim, action="drop", seconds=0.3)  # no snapshot on Binance: any drop needs a repair
        wait_for(lambda: tap.gaps("BTCUSDT"), 20, "the drop repaired")
        [gap] = tap.gaps("BTCUSDT")
        wait_for(lambda: tap.candles("BTCUSDT")[-1].open_time > gap.to_open + 60_000, 20, "candles after the repair")
    candles = tap.candles("BTCUSDT")
    assert [b.open_time - a.open_time for a, b in zip(candles, candles[1:], strict=False)] == [60_000] * (len(candles) - 1)
    assert gap.backfilled == gap.missing > 0
    for candle in candles:
        bar = market.bar_at("BTCUSDT", candle.open_time)
        if gap.from_open <= candle.open_time <= gap.to_open:  # from REST: the exchange's own candles
            assert (candle.open, candle.high, candle.low, candle.close, candle.volume) == tuple(bar)[1:]
        else:  # built from the simulator's three trades a minute: open, then the extremes
            path = [price for _, price in market.path("BTCUSDT", candle.open_time)]
            assert (candle.open, candle.high, candle.low, candle.close, candle.volume) == \
                (path[0], bar.high, bar.low, path[2], pytest.approx(0.003))
