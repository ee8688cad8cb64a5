"""The live feed's market-data thread (meshtrader.marketdata.live.LiveMarketData) run inside a test, the
events it hands to the feed's loop collected as they come: the feed's code path without a mesh around it."""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import zmq

from meshtrader.marketdata.live import LiveMarketData
from meshtrader.runtime.log import Logger
from meshtrader.wire.codec import decode_event
from meshtrader.wire.messages import Candle, MarketGap

_endpoints = itertools.count()


class LiveTap:
    def __init__(self, inbox: zmq.Socket) -> None:
        self.inbox = inbox
        self.events: list = []

    def drain(self) -> None:
        while not self.inbox.closed and self.inbox.poll(0):
            topic, payload, _ = self.inbox.recv_multipart()
            self.events.append(decode_event(topic, payload))

    def candles(self, symbol: str) -> list[Candle]:
        """The candles of a symbol received so far (reading what waits first)."""
        self.drain()
        return [e for e in self.events if isinstance(e, Candle) and e.symbol == symbol]

    def gaps(self, symbol: str) -> list[MarketGap]:
        self.drain()
        return [e for e in self.events if isinstance(e, MarketGap) and e.symbol == symbol]


@contextmanager
def live_tap(exchange_id: str, url: str, symbols: list[str], tf: str, **options) -> Iterator[LiveTap]:
    """LiveMarketData against `url` (the exchange simulator), quick to reconnect."""
    ctx = zmq.Context()
    endpoint = f"inproc://live-tap-{next(_endpoints)}"
    inbox = ctx.socket(zmq.PULL)
    inbox.bind(endpoint)
    live = LiveMarketData(exchange_id, url, symbols, tf, endpoint, ctx, Logger("live-tap", "ERROR"),
                          lambda *_: None, **{"backoff_s": 0.2, "stale_s": 5, **options})
    live.start()
    tap = LiveTap(inbox)
    try:
        yield tap
    finally:
        live.stop()
        tap.drain()  # what came before the stop stays readable
        inbox.close(0)
        ctx.term()
