"""Candles built from a trade stream (ccxt's `watch_trades`), of any length down to 15 s: for bars shorter
than the exchanges' klines, and for exchanges whose ccxt driver has no kline stream (Coinbase Advanced Trade).

The rules, as the peers' trade aggregators have them (Freqtrade's trades-to-OHLCV and its filling of
missing candles, NautilusTrader's time bars, Jesse's live candles):
- A bar covers [open, open + tf): a trade at exactly open + tf belongs to the next bar. Its open and close
  are the earliest and latest trades by time (ties in arrival order), whatever order they arrived in.
- A bar closes when a trade of a later interval arrives, or once the exchange's clock has passed its end
  by `grace_ms` (a trade is stamped when it matched and reaches us a little later).
- An interval without a trade becomes a flat bar at the last close with zero volume, so the series has no
  holes and the subscribers' gap checks never fire on a quiet market. Before the first trade there is no
  price to be flat at: no bar.
- A trade seen before (same id: a reconnect's snapshot, an overlap of REST and stream) is dropped; a trade
  for an interval already closed is dropped and counted as late. A closed bar is never revised.
Pure: no clock, no I/O.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from meshtrader.domain.candles import Bar

SEEN_IDS = 4096  # trade ids remembered for deduplication: far more than a reconnect replays


class MarketTrade(NamedTuple):
    time: int          # exchange time, ms
    price: float
    amount: float
    id: str | None     # the exchange's trade id (None: cannot be deduplicated)


@dataclass
class _OpenBar:
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    first_ms: int  # times of the trades that set the open and the close
    last_ms: int

    def add(self, trade: MarketTrade) -> None:
        self.high, self.low = max(self.high, trade.price), min(self.low, trade.price)
        self.volume += trade.amount
        if trade.time < self.first_ms:
            self.open, self.first_ms = trade.price, trade.time
        if trade.time >= self.last_ms:
            self.close, self.last_ms = trade.price, trade.time

    def bar(self) -> Bar:
        return Bar(self.open_time, self.open, self.high, self.low, self.close, self.volume)


class TradeBars:
    """Trades in, closed bars out. `closed_until` is the open time of the last bar already closed (or
    published) and `last_close` its close, so a builder resumes a series without a hole or an overlap."""

    def __init__(self, tf_ms: int, grace_ms: int = 2000, closed_until: int = -1,
                 last_close: float | None = None) -> None:
        self.tf_ms, self.grace_ms = tf_ms, grace_ms
        self.closed_until, self.last_close = closed_until, last_close
        self.current: _OpenBar | None = None
        self.late = 0        # trades dropped because their bar had closed
        self.duplicates = 0  # trades dropped because their id was seen
        self._seen: set[str] = set()
        self._seen_order: deque[str] = deque()

    def interval(self, time_ms: int) -> int:
        return time_ms - time_ms % self.tf_ms

    def add(self, trade: MarketTrade) -> list[Bar] | None:
        """Take one trade: the bars it closes (the open one and flat bars for the empty intervals before
        it), or None if it was dropped (seen before, or late)."""
        if self._seen_before(trade.id):
            self.duplicates += 1
            return None
        start = self.interval(trade.time)
        if start <= self.closed_until:
            self.late += 1
            return None
        closed = self._close_before(start)
        if self.current is None:
            self.current = _OpenBar(start, trade.price, trade.price, trade.price, trade.price, trade.amount,
                                    trade.time, trade.time)
        else:
            self.current.add(trade)
        return closed

    def close_due(self, exchange_now_ms: int) -> list[Bar]:
        """The bars whose end the exchange's clock passed `grace_ms` ago (flat ones for empty intervals)."""
        return self._close_before(self.interval(exchange_now_ms - self.grace_ms))

    def _close_before(self, start: int) -> list[Bar]:
        """Close every interval that opens before `start`: the open bar, then flat bars up to `start`."""
        closed: list[Bar] = []
        if self.current is not None and self.current.open_time < start:
            closed.append(self.current.bar())
            self.closed_until, self.last_close, self.current = self.current.open_time, self.current.close, None
        if self.current is None and self.last_close is not None and self.closed_until >= 0:
            price = self.last_close
            for empty in range(self.closed_until + self.tf_ms, start, self.tf_ms):
                closed.append(Bar(empty, price, price, price, price, 0.0))
                self.closed_until = empty
        return closed

    def _seen_before(self, trade_id: str | None) -> bool:
        if trade_id is None:
            return False
        if trade_id in self._seen:
            return True
        self._seen.add(trade_id)
        self._seen_order.append(trade_id)
        if len(self._seen_order) > SEEN_IDS:
            self._seen.discard(self._seen_order.popleft())
        return False
