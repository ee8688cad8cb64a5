"""The live feed's ccxt exchanges pointed at a local URL."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("exchange_id", ["binance", "kraken", "coinbase"])
def test_any_ccxt_exchange_can_be_pointed_at_a_local_url(exchange_id):
    import zmq

    from meshtrader.marketdata.live import LiveMarketData
    from meshtrader.runtime.log import Logger

    live = LiveMarketData(exchange_id, "http://127.0.0.1:9", ["BTCUSDT"], "1m", "inproc://x", zmq.Context.instance(),
                          Logger("t", "ERROR"), lambda *_: None)
    exchange = live.exchange()
    urls = []

    def collect(value):
        if isinstance(value, dict):
            for v in value.values():
                collect(v)
        elif isinstance(value, str) and "://" in value:
            urls.append(value)

    collect(exchange.urls["api"])
    assert urls and all("//127.0.0.1:9/" in u for u in urls)
    assert exchange.has.get("watchOHLCV") or exchange.has.get("fetchOHLCV")  # stream, or the REST fallback
