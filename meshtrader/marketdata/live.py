"""Live market data through ccxt: websocket klines first, REST as the fallback and the repair tool.

Rules that keep the published series continuous and true:
- A candle is published once, when closed, never revised. The still-open candle goes out as ticks.
- A candle comes from the stream only if the stream was connected from before its open until the next
  candle began, and the next candle is the very next one. Otherwise (a reconnect, a silent stretch, a
  jump) the missing and doubtful candles are fetched through REST *before* anything newer is published.
- Every candle is validated (meshtrader.marketdata.files.candle_problem); a bad one is refetched through REST, and
  if that is bad too it is rejected (counted, logged) and never reaches a strategy.
- Disconnections retry forever with exponential backoff and jitter (1, 2, 4, 8, 16 s, capped); 429/418
  answers back off the same way instead of hammering. No data for `stale_s` raises a stale alarm.

The work runs on an asyncio loop in its own thread and hands frames [topic, payload] to the feed's
message loop over an inproc PUSH socket, so the feed keeps one publisher with one sequence per topic.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import zmq

from meshtrader.bus import AsyncioThread
from meshtrader.domain.candles import Bar, candle_problem, timeframe_ms
from meshtrader.runtime.log import Logger
from meshtrader.wire.codec import encode
from meshtrader.wire.messages import (
    Candle,
    FeedStatus,
    MarketGap,
    OrderBook,
    Tick,
    book_topic,
    candle_topic,
    tick_topic,
)

BACKFILL_LIMIT = 1000
BOOK_LEVELS = 20  # order book levels a side the feed publishes (MESH_FILL_MODEL=book)
STATUS_EVERY_S = 5.0


def point_at(urls: dict, base_url: str) -> None:
    """Rewrite every API URL of a ccxt exchange to base_url/<original host><original path>."""
    base = urlsplit(base_url)
    for key, value in urls.items():
        if isinstance(value, dict):
            point_at(value, base_url)
        elif isinstance(value, str) and "://" in value:
            original = urlsplit(value)
            secure = base.scheme == "https"
            scheme = ("wss" if secure else "ws") if original.scheme.startswith("ws") else base.scheme
            urls[key] = f"{scheme}://{base.netloc}/{original.netloc}{original.path}"


class Backoff:
    """1, 2, 4, 8, 16 s (times `base`), capped, with +-25% jitter; reset after a success."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self.base_s, self.cap_s, self.attempt = base_s, cap_s, 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * 2 ** self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.75, 1.25)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class SymbolState:
    symbol: str              # exchange id, e.g. BTCUSDT
    unified: str = ""        # ccxt symbol, e.g. BTC/USDT
    last_published: int = -1  # open time of the last candle published
    current: list | None = None  # the candle trading now, as the stream last showed it
    connected_since: int | None = None  # open time of the candle trading when the stream (re)connected
    last_data: float = 0.0
    stale: bool = False
    connected: bool = False
    finals: set[int] = field(default_factory=set)  # open times whose closing kline the stream carried




class LiveMarketData(AsyncioThread):
    def __init__(self, exchange_id: str, exchange_url: str | None, symbols: list[str], tf: str,
                 push_endpoint: str, ctx: zmq.Context, log: Logger, counters: Callable[[str, str, float], None],
                 backoff_s: float = 1.0, backoff_cap_s: float = 16.0, stale_s: float | None = None,
                 resume_from: dict[str, int] | None = None, transport: str = "auto",
                 poll_s: float | None = None, book_levels: int = 0) -> None:
        self.exchange_id = exchange_id
        self.exchange_url = exchange_url
        self.tf = tf
        self.tf_ms = timeframe_ms(tf)
        self.states = {s: SymbolState(s, last_published=(resume_from or {}).get(s, -1)) for s in symbols}
        super().__init__("livefeed", ctx, push_endpoint)
        self.log = log
        self.count = counters  # count(metric, symbol, amount)
        self.backoff_s, self.backoff_cap_s = backoff_s, backoff_cap_s
        self.stale_s = stale_s or 2 * self.tf_ms / 1000
        self.transport = transport
        self.poll_s = poll_s or min(10.0, self.tf_ms / 6000)
        self.book_levels = book_levels  # 0: no order book
        self.finals_marked = False  # the exchange flags closing klines (Binance's "x"): only those are final
        self.received_ns: dict[str, int] = {}

    def emit(self, topic: bytes, message, received_ns: int = 0) -> None:
        """To the feed's loop: [topic, payload, monotonic ns the websocket message was received]."""
        self.push.send_multipart([topic, encode(message), received_ns.to_bytes(8, "little")])

    def exchange(self):
        import ccxt.pro as ccxtpro

        if not hasattr(ccxtpro, self.exchange_id):
            raise ValueError(f"ccxt does not know the exchange {self.exchange_id!r}")
        exchange = getattr(ccxtpro, self.exchange_id)({"enableRateLimit": True, "newUpdates": False,
                                                       "options": {"defaultType": "spot",
                                                                   "fetchMarkets": {"types": ["spot"]}}})
        if self.exchange_url:
            point_at(exchange.urls["api"], self.exchange_url)
        handle = exchange.handle_message

        def stamped(client, message):  # when each websocket message arrived, for the feed's added latency
            if isinstance(message, dict) and message.get("s") in self.states:
                self.received_ns[message["s"]] = time.monotonic_ns()
                kline = message.get("k")
                if isinstance(kline, dict) and "x" in kline:  # Binance says which kline closes its candle
                    self.finals_marked = True
                    if kline["x"] is True and isinstance(kline.get("t"), int):
                        finals = self.states[message["s"]].finals
                        finals.add(kline["t"])
                        if len(finals) > 64:
                            finals.discard(min(finals))
            return handle(client, message)

        exchange.handle_message = stamped
        return exchange

    async def run_async(self) -> None:
        import ccxt

        exchange = self.exchange()
        backoff = Backoff(self.backoff_s, self.backoff_cap_s)
        while not self.stopping:
            try:
                await exchange.load_markets()
                break
            except ccxt.BaseError as error:
                delay = backoff.next_delay()
                self.log.warning("markets_unavailable", exchange=self.exchange_id, error=str(error)[:200],
                                 retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
        for state in self.states.values():
            markets = exchange.markets_by_id.get(state.symbol) or []
            spot = [m for m in markets if m.get("spot")] or markets
            if not spot:
                self.log.error("unknown_symbol", exchange=self.exchange_id, symbol=state.symbol)
                continue
            state.unified = spot[0]["symbol"]
        streaming = self.transport != "rest" and exchange.has.get("watchOHLCV")
        if not streaming:
            self.log.info("rest_polling", exchange=self.exchange_id, every_s=self.poll_s,
                          why="asked for" if self.transport == "rest" else "no websocket klines in ccxt for it")
        source = self.watch if streaming else self.poll
        tasks = [asyncio.create_task(source(exchange, s)) for s in self.states.values() if s.unified]
        if self.book_levels and exchange.has.get("watchOrderBook"):
            tasks += [asyncio.create_task(self.watch_book(exchange, s)) for s in self.states.values() if s.unified]
        tasks.append(asyncio.create_task(self.watchdog(exchange)))
        try:
            await self.until_stopped()
        finally:
            for task in tasks:
                task.cancel()
            await exchange.close()

    # ----- streaming -----------------------------------------------------------------------------
    async def watch(self, exchange, state: SymbolState) -> None:
        import ccxt

        backoff = Backoff(self.backoff_s, self.backoff_cap_s)
        while not self.stopping:
            try:
                cache = await exchange.watch_ohlcv(state.unified, self.tf)
            except asyncio.CancelledError as error:
                if asyncio.current_task().cancelling():  # we are being stopped
                    raise
                await self.stream_down(state, backoff, f"stream closed ({error!r})")  # ccxt cancelled the wait
                continue
            except ccxt.BaseError as error:
                await self.stream_down(state, backoff, str(error))
                continue
            except Exception as error:  # a message ccxt could not parse: drop it, keep the stream
                self.count("malformed", state.symbol, 1)
                self.log.warning("stream_message_rejected", symbol=state.symbol, error=repr(error)[:200])
                continue
            backoff.reset()
            state.last_data = time.monotonic()
            await self.on_update(exchange, state, list(cache))

    async def watch_book(self, exchange, state: SymbolState) -> None:
        """The top `book_levels` of the order book, as `md.book.<SYM>` on every update ccxt assembles
        (its snapshot + diff-depth sequence checks included). A broken sequence resubscribes."""
        topic = book_topic(state.symbol)
        backoff = Backoff(self.backoff_s, self.backoff_cap_s)
        while not self.stopping:
            try:
                book = await exchange.watch_order_book(state.unified)
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():
                    raise
                continue
            except Exception as error:  # a bad book message or a broken sequence must not end the task
                if _error_kind(error) == "rate_limited":  # its REST snapshot met a 429
                    self.count("rate_limited", state.symbol, 1)
                self.log.warning("book_stream_down", symbol=state.symbol, error=str(error)[:200])
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            levels = self.book_levels
            self.emit(topic, OrderBook(symbol=state.symbol, bids=[tuple(b[:2]) for b in book["bids"][:levels]],
                                       asks=[tuple(a[:2]) for a in book["asks"][:levels]],
                                       et=book.get("timestamp") or 0))

    async def poll(self, exchange, state: SymbolState) -> None:
        """REST fallback: the last few klines every `poll_s`, through the same rules as the stream."""
        import ccxt

        backoff = Backoff(self.backoff_s, self.backoff_cap_s)
        while not self.stopping:
            try:
                rows = await exchange.fetch_ohlcv(state.unified, self.tf, limit=3)
            except ccxt.BaseError as error:
                await self.stream_down(state, backoff, str(error))
                continue
            backoff.reset()
            if rows:
                state.last_data = time.monotonic()
                await self.on_update(exchange, state, rows)
            await asyncio.sleep(self.poll_s)

    async def stream_down(self, state: SymbolState, backoff: Backoff, error: str) -> None:
        self.set_connected(state, False, f"stream error: {error[:160]}")
        delay = backoff.next_delay()
        self.count("reconnects", state.symbol, 1)
        self.log.warning("stream_down", symbol=state.symbol, error=error[:200], retry_in_s=round(delay, 2))
        await asyncio.sleep(delay)

    async def on_update(self, exchange, state: SymbolState, cache: list) -> None:
        if not cache:
            return
        latest = cache[-1]
        open_time = int(latest[0])
        if not state.connected:
            state.connected_since = open_time
            self.set_connected(state, True, "stream connected")
        current = state.current
        if current is not None and open_time > int(current[0]):
            await self.close_candles(exchange, state, {int(c[0]): c for c in cache}, int(current[0]), open_time)
        elif current is None and state.last_published >= 0 and open_time > state.last_published + self.tf_ms:
            await self.backfill(exchange, state, until_open=open_time, reason="catching up after a restart")
        if current is None or open_time >= int(current[0]):
            state.current = latest
            self.emit(tick_topic(state.symbol), Tick(symbol=state.symbol, price=float(latest[4]), et=open_time,
                                                     tid=random.getrandbits(63)),
                      self.received_ns.pop(state.symbol, 0))

    async def close_candles(self, exchange, state: SymbolState, streamed: dict[int, list], first: int,
                            until_open: int) -> None:
        """Candles [first, until_open) have closed. Those the stream carried whole (to their closing
        kline, where the exchange marks it), one after another on a connection open since before they
        began, are published as streamed (ccxt may hand over several updates at once); from the first
        hole or doubt on, REST fills in."""
        clean = state.connected_since is not None and state.connected_since < first
        at = first
        while (clean and at < until_open and at in streamed and state.last_published == at - self.tf_ms
               and (at in state.finals or not self.finals_marked)):
            await self.publish_candle(exchange, state, _bar(streamed[at]), source="stream")
            at += self.tf_ms
        if at < until_open:
            await self.backfill(exchange, state, until_open=until_open,
                                reason="candles missing from the stream" if clean else "stream reconnected")

    async def publish_candle(self, exchange, state: SymbolState, bar: Bar, source: str) -> None:
        previous = state.last_published if state.last_published >= 0 else None
        problem = candle_problem(bar, previous)
        if problem and source == "stream":
            self.count("rejected", state.symbol, 1)
            self.log.warning("candle_rejected", symbol=state.symbol, open_time=bar.open_time, problem=problem,
                             source=source, action="refetching through REST")
            await self.backfill(exchange, state, until_open=bar.open_time + self.tf_ms, reason=f"bad candle: {problem}")
            return
        if problem:
            self.count("rejected", state.symbol, 1)
            self.log.warning("candle_rejected", symbol=state.symbol, open_time=bar.open_time, problem=problem,
                             source=source)
            return
        state.last_published = bar.open_time
        self.emit(candle_topic(state.symbol, self.tf), Candle(
            symbol=state.symbol, tf=self.tf, open_time=bar.open_time, open=bar.open, high=bar.high, low=bar.low,
            close=bar.close, volume=bar.volume, et=bar.open_time + self.tf_ms, tid=random.getrandbits(63)))

    async def backfill(self, exchange, state: SymbolState, until_open: int, reason: str) -> None:
        """Fetch every closed candle after the last published one and before `until_open`, through REST,
        retrying with backoff until it succeeds: nothing newer is published before."""
        import ccxt

        start = state.last_published + self.tf_ms if state.last_published >= 0 else until_open - self.tf_ms
        if start >= until_open:
            return
        missing = (until_open - start) // self.tf_ms
        backoff = Backoff(self.backoff_s, self.backoff_cap_s)
        fetched: list[list] = []
        since = start
        while since < until_open and not self.stopping:
            try:
                rows = await exchange.fetch_ohlcv(state.unified, self.tf, since=since,
                                                  limit=min(BACKFILL_LIMIT, (until_open - since) // self.tf_ms))
            except ccxt.BaseError as error:
                delay = backoff.next_delay()
                kind = _error_kind(error)
                self.count(kind, state.symbol, 1)
                self.log.warning("backfill_retry", symbol=state.symbol, error=str(error)[:200], kind=kind,
                                 retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                continue
            rows = [r for r in rows if since <= int(r[0]) < until_open]
            if not rows:
                break
            fetched.extend(rows)
            since = int(rows[-1][0]) + self.tf_ms
        for row in fetched:
            await self.publish_candle(exchange, state, _bar(row), source="rest")
        self.count("gaps", state.symbol, 1)
        self.count("backfilled", state.symbol, len(fetched))
        self.log.warning("gap_repaired", symbol=state.symbol, reason=reason, missing=missing, backfilled=len(fetched))
        self.emit(b"md.gap." + state.symbol.encode(), MarketGap(
            symbol=state.symbol, tf=self.tf, from_open=start, to_open=until_open - self.tf_ms, missing=missing,
            backfilled=len(fetched), reason=reason, et=until_open))

    # ----- health --------------------------------------------------------------------------------
    def set_connected(self, state: SymbolState, connected: bool, reason: str) -> None:
        if state.connected == connected:
            return
        state.connected = connected
        if not connected:
            state.connected_since = None
        self.publish_status(state, reason)

    def publish_status(self, state: SymbolState, reason: str) -> None:
        self.count("connected", state.symbol, 1.0 if state.connected else 0.0)
        self.emit(b"md.status." + state.symbol.encode(), FeedStatus(
            symbol=state.symbol, connected=state.connected, stale=state.stale, reason=reason,
            et=state.last_published + self.tf_ms if state.last_published >= 0 else 0))

    async def watchdog(self, exchange) -> None:
        """Stale-data alarm after `stale_s` of silence (two timeframes by default). A websocket can die
        silently (ccxt's receive loop ends on a frame it cannot parse, the socket stays open), so a stale
        stream is also closed, which makes the watchers reconnect and repair the gap."""
        started = last_report = time.monotonic()
        while not self.stopping:
            await asyncio.sleep(min(1.0, self.stale_s / 4))
            now = time.monotonic()
            if now - last_report >= STATUS_EVERY_S:  # for subscribers that (re)joined since the last change
                last_report = now
                for state in self.states.values():
                    self.publish_status(state, "periodic")
            for state in self.states.values():
                silent_for = now - (state.last_data or started)
                stale = silent_for > self.stale_s
                if stale != state.stale:
                    state.stale = stale
                    reason = f"no market data for {silent_for:.1f}s" if stale else "market data flowing again"
                    self.log.warning("stale_data" if stale else "data_resumed", symbol=state.symbol, reason=reason)
                    self.publish_status(state, reason)
                    if stale:
                        await self.force_reconnect(exchange, state)

    async def force_reconnect(self, exchange, state: SymbolState) -> None:
        """Fail every wait on the stream's connections and close them; the watchers then reconnect."""
        import ccxt

        self.count("stalls", state.symbol, 1)
        for client in list(exchange.clients.values()):
            client.on_error(ccxt.NetworkError(f"no data for {self.stale_s}s: reconnecting"))


def _error_kind(error: Exception) -> str:
    import ccxt

    return "rate_limited" if isinstance(error, ccxt.DDoSProtection | ccxt.RateLimitExceeded) else "rest_error"


def _bar(row: list) -> Bar:
    return Bar(int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5] or 0.0))
