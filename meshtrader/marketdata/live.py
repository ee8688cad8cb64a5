"""Live market data through ccxt: websocket klines first, candles built from the websocket trade stream
where klines do not serve (bars under 1m, exchanges with no kline stream in ccxt, MESH_FEED_TRANSPORT=trades),
REST as the fallback and the repair tool.

Rules that keep the published series continuous and true:
- A candle is published once, when closed, never revised. The still-open candle goes out as ticks.
- A candle comes from the stream only if the stream was connected from before its open until the next
  candle began, and the next candle is the very next one. Otherwise (a reconnect, a silent stretch, a
  jump) the missing and doubtful candles are fetched through REST *before* anything newer is published.
- Every candle is validated (meshtrader.marketdata.files.candle_problem); a bad one is refetched through REST, and
  if that is bad too it is rejected (counted, logged) and never reaches a strategy.
- From the trade stream (meshtrader.marketdata.trade_bars) a bar is taken only if the stream was connected
  from before its first trade could have happened: after a reconnect (or a restart) the bars since the last
  one published are rebuilt from REST trades, or fetched as REST candles where the exchange serves the
  timeframe, before anything newer is published. A fresh start begins with the first interval seen whole.
- Disconnections retry forever with exponential backoff and jitter (1, 2, 4, 8, 16 s, capped); 429/418
  answers back off the same way instead of hammering. No data for `stale_s` raises a stale alarm.

The work runs on an asyncio loop in its own thread and hands frames [topic, payload] to the feed's
message loop over an inproc PUSH socket, so the feed keeps one publisher with one sequence per topic.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import zmq

from meshtrader.bus import AsyncioThread
from meshtrader.domain.candles import TIMEFRAMES_MS, Bar, candle_problem, timeframe_ms
from meshtrader.marketdata.trade_bars import MarketTrade, TradeBars
from meshtrader.runtime.log import Logger
from meshtrader.wire.codec import encode
from meshtrader.wire.messages import (
    Candle,
    FeedStatus,
    FundingRate,
    MarketGap,
    OrderBook,
    Tick,
    book_topic,
    candle_topic,
    funding_topic,
    tick_topic,
)

BACKFILL_LIMIT = 1000  # candles a REST request asks for; also how far back a trade-stream repair reaches
TRADES_PAGE = 1000  # trades a REST request asks for (Binance's and Coinbase's maximum)
TRADES_WINDOW_MS = 3_599_000  # a REST trades request spans under an hour (Binance refuses more)
FUNDING_PAGE = 1000  # funding settlements a REST request asks for (Binance's maximum: 333 days of 8-hour ones)
FUNDING_CATCH_UP_MS = 7 * 86_400_000  # how far back a restarted feed reads settlements it missed
REPAIR_TRIES = 3  # a trade-stream repair gives up (and reports the gap) after this many failed REST requests
GRACE_MS = 2000  # a bar from trades closes this long after its end on the exchange's clock (trades arrive late)
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
    last_close: float | None = None  # close of the last candle published
    # the trade stream only:
    bars: TradeBars | None = None  # None while disconnected: nothing closes on the clock then
    trusted_from: int = -1  # bars opening before this were not seen whole: never published as built
    rest_until: int = -1  # REST candles owed up to this open time, fetched once the last doubtful bar closed
    clock: tuple[int, float] = (0, 0.0)  # the newest trade's exchange time and the monotonic time it came
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one trade batch or bar close at a time
    # futures: the last funding settlement published (its time), the next one's time (0: not known yet)
    funding_after: int = 0
    funding_due: int = 0
    funding_task: asyncio.Task | None = None  # the settlement being read, at most one at a time


class LiveMarketData(AsyncioThread):
    def __init__(self, exchange_id: str, exchange_url: str | None, symbols: list[str], tf: str,
                 push_endpoint: str, ctx: zmq.Context, log: Logger, counters: Callable[[str, str, float], None],
                 backoff_s: float = 1.0, backoff_cap_s: float = 16.0, stale_s: float | None = None,
                 resume_from: dict[str, tuple[int, float]] | None = None, transport: str = "auto",
                 poll_s: float | None = None, book_levels: int = 0, grace_ms: int = GRACE_MS,
                 futures: bool = False, funding_after: dict[str, int] | None = None) -> None:
        """`resume_from`: per symbol, the open time and close of the last candle published before a restart;
        `futures`: the symbols' USD-M perpetuals (linear contracts) rather than their spot markets, with their
        funding settlements, from after `funding_after` (per symbol: the last one published before a restart)."""
        self.exchange_id = exchange_id
        self.futures = futures
        self.exchange_url = exchange_url
        self.tf = tf
        self.tf_ms = timeframe_ms(tf)
        self.states: dict[str, SymbolState] = {}
        for symbol in symbols:
            last_open, last_close = (resume_from or {}).get(symbol, (-1, None))
            self.states[symbol] = SymbolState(symbol, last_published=last_open, last_close=last_close,
                                              funding_after=(funding_after or {}).get(symbol, 0))
        super().__init__("livefeed", ctx, push_endpoint)
        self.log = log
        self.count = counters  # count(metric, symbol, amount)
        self.backoff_s, self.backoff_cap_s = backoff_s, backoff_cap_s
        self.stale_s = stale_s or 2 * self.tf_ms / 1000
        self.transport = transport
        self.poll_s = poll_s or min(10.0, self.tf_ms / 6000)
        self.book_levels = book_levels  # 0: no order book
        self.grace_ms = grace_ms
        self.source, self.source_why = "klines", ""  # klines, trades or rest: see choose_source
        self.rest_candles = False  # trade stream: repairs fetch REST candles (the exchange serves the timeframe)
        self.finals_marked = False  # the exchange flags closing klines (Binance's "x"): only those are final
        self.received_ns: dict[str, int] = {}

    def emit(self, topic: bytes, message, received_ns: int = 0) -> None:
        """To the feed's loop: [topic, payload, monotonic ns the websocket message was received]."""
        self.push.send_multipart([topic, encode(message), received_ns.to_bytes(8, "little")])

    def exchange(self):
        import ccxt.pro as ccxtpro

        if not hasattr(ccxtpro, self.exchange_id):
            raise ValueError(f"ccxt does not know the exchange {self.exchange_id!r}")
        exchange = getattr(ccxtpro, self.exchange_id)({"enableRateLimit": True})
        # market data needs the markets only: no currencies (coinbase's cost three rate-limited requests, ~1 s)
        exchange.has = {**exchange.has, "fetchCurrencies": False}
        exchange.options["defaultType"] = "swap" if self.futures else "spot"
        if isinstance(exchange.options.get("fetchMarkets", {}), dict):  # coinbase's names a method instead
            exchange.options["fetchMarkets"] = {**exchange.options.get("fetchMarkets", {}),
                                                "types": ["linear" if self.futures else "spot"]}
        self.source, self.source_why = self.choose_source(exchange.has)
        # the trade stream takes each trade once (ccxt hands over those new since the last call); the kline
        # stream wants the whole cache, the candle still trading included
        exchange.newUpdates = self.source == "trades"
        self.rest_candles = self.tf in exchange.timeframes and bool(exchange.has.get("fetchOHLCV"))
        if self.exchange_url:
            point_at(exchange.urls["api"], self.exchange_url)
        handle = exchange.handle_message

        def stamped(client, message):  # when each websocket message arrived, for the feed's added latency
            symbol = _message_symbol(message)
            if symbol in self.states:
                self.received_ns[symbol] = time.monotonic_ns()
                kline = message.get("k")
                if isinstance(kline, dict) and "x" in kline:  # Binance says which kline closes its candle
                    self.finals_marked = True
                    if kline["x"] is True and isinstance(kline.get("t"), int):
                        finals = self.states[symbol].finals
                        finals.add(kline["t"])
                        if len(finals) > 64:
                            finals.discard(min(finals))
            return handle(client, message)

        exchange.handle_message = stamped
        return exchange

    def choose_source(self, has: dict) -> tuple[str, str]:
        """Where candles come from, and why: websocket klines, bars built from the websocket trade stream
        (asked for, bars under a minute, or no kline stream in ccxt for the exchange), or REST polling."""
        klines, trades = has.get("watchOHLCV"), has.get("watchTrades")
        if self.transport == "rest":
            return "rest", "asked for"
        if self.transport == "trades" and trades:
            return "trades", "asked for"
        if self.transport == "auto" and trades and self.tf_ms < TIMEFRAMES_MS["1m"]:
            return "trades", "no kline stream under a minute"
        if klines and self.transport != "trades":
            return "klines", "websocket klines"
        if trades and self.transport != "websocket":
            return "trades", "no websocket klines in ccxt for it"
        return "rest", f"no websocket {'trades' if self.transport == 'trades' else 'klines'} in ccxt for it"

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
            kind = [m for m in markets if (m.get("contract") and m.get("linear") if self.futures else m.get("spot"))]
            if not (kind or markets):
                self.log.error("unknown_symbol", exchange=self.exchange_id, symbol=state.symbol)
                continue
            state.unified = (kind or markets)[0]["symbol"]
        details = {"every_s": self.poll_s} if self.source == "rest" else {
            "repairs_with": "REST candles" if self.rest_candles else "REST trades"} if self.source == "trades" else {}
        self.log.info("candle_source", exchange=self.exchange_id, source=self.source, why=self.source_why,
                      timeframe=self.tf, **details)
        source = {"klines": self.watch, "trades": self.watch_trades, "rest": self.poll}[self.source]
        tasks = [asyncio.create_task(source(exchange, s)) for s in self.states.values() if s.unified]
        if self.source == "trades":
            tasks.append(asyncio.create_task(self.close_on_the_clock(exchange)))
        if self.book_levels and exchange.has.get("watchOrderBook"):
            tasks += [asyncio.create_task(self.watch_book(exchange, s)) for s in self.states.values() if s.unified]
        tasks.append(asyncio.create_task(self.watchdog(exchange)))
        if self.futures and exchange.has.get("fetchFundingRateHistory") and exchange.has.get("fetchFundingRate"):
            for state in self.states.values():
                if state.unified:
                    state.funding_task = asyncio.create_task(self.read_funding(exchange, state))
        elif self.futures:
            self.log.warning("funding_unavailable", exchange=self.exchange_id,
                             why="ccxt reads no funding-rate history from it: paper positions pay no funding")
        try:
            await self.until_stopped()
        finally:
            for task in tasks:
                task.cancel()
            await exchange.close()

    # ----- streaming -----------------------------------------------------------------------------
    async def watch(self, exchange, state: SymbolState) -> None:
        """Candles from the websocket kline stream."""
        await self.stream(state, lambda: exchange.watch_ohlcv(state.unified, self.tf),
                          lambda cache: self.on_update(exchange, state, list(cache)))

    async def watch_trades(self, exchange, state: SymbolState) -> None:
        """Candles built from the websocket trade stream."""
        async def receive() -> list[MarketTrade]:
            return [_market_trade(trade) for trade in await exchange.watch_trades(state.unified)]

        await self.stream(state, receive, lambda trades: self.on_trades(exchange, state, trades))

    async def stream(self, state: SymbolState, receive: Callable[[], Awaitable], handle: Callable[[Any], Awaitable]
                     ) -> None:
        """Hand what each `receive()` gets to `handle`, forever; a broken stream reconnects with backoff."""
        import ccxt

        backoff = Backoff(self.backoff_s, self.backoff_cap_s)
        while not self.stopping:
            try:
                update = await receive()
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
            await handle(update)

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
        state.bars = None  # the trade stream's builder: rebuilt, and repaired, at the reconnection
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

    # ----- the trade stream ----------------------------------------------------------------------
    async def on_trades(self, exchange, state: SymbolState, trades: list[MarketTrade]) -> None:
        """Each new trade into the bar builder; the bars it closes go out before its tick."""
        if not trades:
            return
        async with state.lock:
            resumed = not state.connected
            if resumed:
                await self.resume_bars(exchange, state, min(t.time for t in trades))
                self.set_connected(state, True, "stream connected")
            received_ns = self.received_ns.pop(state.symbol, 0)
            late = state.bars.late
            for trade in trades:
                closed = state.bars.add(trade)
                if closed is None:
                    continue
                await self.publish_built(exchange, state, closed)
                if trade.time >= state.clock[0]:
                    state.clock = (trade.time, time.monotonic())
                self.emit(tick_topic(state.symbol), Tick(symbol=state.symbol, price=trade.price, qty=trade.amount,
                                                         et=trade.time, tid=random.getrandbits(63)), received_ns)
                received_ns = 0
            if state.bars.late > late and not resumed:  # a reconnect's snapshot is no news
                self.count("late_trades", state.symbol, state.bars.late - late)
                self.log.warning("late_trades", symbol=state.symbol, dropped=state.bars.late - late,
                                 why="their bar had closed (a closed bar is never revised)")

    async def resume_bars(self, exchange, state: SymbolState, first: int) -> None:
        """The stream (re)connected and its first trade is at `first`: a new bar builder, and the bars since
        the last one published repaired before anything newer. The stream is whole from `first` on (a
        snapshot of recent trades included), so the repair needs REST only for what came before it."""
        tf = self.tf_ms
        joined = first - first % tf  # the interval the stream joined in
        next_open = state.last_published + tf
        if state.last_published < 0:  # a fresh start: the series begins with the first interval seen whole
            state.bars, state.trusted_from = TradeBars(tf, self.grace_ms, closed_until=joined - tf), joined + tf
            return
        if first < next_open:  # the stream reaches back past the last bar published: nothing is missing
            state.bars = TradeBars(tf, self.grace_ms, closed_until=state.last_published, last_close=state.last_close)
            state.trusted_from = next_open
            return
        state.bars = TradeBars(tf, self.grace_ms, closed_until=joined - tf)  # no flat bars over unknown ground
        state.trusted_from = joined + tf
        if self.rest_candles:  # fetched once the interval joined closes (it is still trading)
            state.rest_until = joined + tf
            return
        repair_from = max(next_open, joined - BACKFILL_LIMIT * tf)
        fetched = await self.rest_trades(exchange, state, repair_from, first)
        if fetched is None:
            return  # the hole is reported with the first bar published after it
        state.bars = TradeBars(tf, self.grace_ms, closed_until=repair_from - tf,
                               last_close=state.last_close if repair_from == next_open else None)
        state.trusted_from = repair_from
        closed = [bar for trade in sorted(fetched, key=lambda t: t.time) for bar in state.bars.add(trade) or []]
        await self.publish_built(exchange, state, closed)
        self.report_gap(state, repair_from, joined + tf, (joined + tf - repair_from) // tf,
                        f"stream reconnected: rebuilt from {len(fetched)} REST trades")

    async def publish_built(self, exchange, state: SymbolState, bars: list) -> None:
        """Publish bars the builder closed. Those opening before `trusted_from` were not seen whole: they
        are dropped, or replaced by REST candles when the last of them closes."""
        for bar in bars:
            if bar.open_time < state.trusted_from:
                if bar.open_time + self.tf_ms == state.rest_until:
                    state.rest_until = -1
                    await self.backfill(exchange, state, until_open=bar.open_time + self.tf_ms,
                                        reason="stream reconnected")
                continue
            if 0 <= state.last_published < bar.open_time - self.tf_ms:
                self.report_gap(state, state.last_published + self.tf_ms, bar.open_time, 0,
                                f"not rebuilt: no REST trades for it, or more than {BACKFILL_LIMIT} bars back")
            await self.publish_candle(exchange, state, bar, source="trades")

    async def rest_trades(self, exchange, state: SymbolState, since: int, until: int) -> list[MarketTrade] | None:
        """Every trade in [since, until) through REST, or None if the exchange would not give them. A page
        holds the oldest or the newest trades of its window depending on the exchange, so a window whose
        answer comes back full is split in two (down to a second: Coinbase's resolution)."""
        trades: list[MarketTrade] = []
        windows = [(start, min(start + TRADES_WINDOW_MS, until)) for start in range(since, until, TRADES_WINDOW_MS)]
        while windows:
            start, end = windows.pop()
            # `until` rounded up to a whole second: Coinbase's windows are in seconds
            page = await self.rest_call(state, exchange.fetch_trades, state.unified, start, TRADES_PAGE,
                                        {"until": end + 999})
            if page is None:
                return None
            if len(page) >= TRADES_PAGE and end - start > 1000:
                middle = start + (end - start) // 2
                windows += [(middle, end), (start, middle)]
                continue
            trades += [t for t in map(_market_trade, page) if start <= t.time < end]
        return trades

    async def rest_call(self, state: SymbolState, call: Callable[..., Awaitable], *args) -> Any:
        """A REST request (a repair, a funding read), retried with backoff; None after REPAIR_TRIES failures."""
        import ccxt

        backoff = Backoff(self.backoff_s, self.backoff_cap_s)
        for attempt in range(1, REPAIR_TRIES + 1):
            try:
                return await call(*args)
            except ccxt.BaseError as error:
                kind = _error_kind(error)
                self.count(kind, state.symbol, 1)
                self.log.warning("repair_request_failed", symbol=state.symbol, error=str(error)[:200], kind=kind,
                                 attempt=attempt, of=REPAIR_TRIES)
                if attempt < REPAIR_TRIES:
                    await asyncio.sleep(backoff.next_delay())
        return None

    async def close_on_the_clock(self, exchange) -> None:
        """Close the bars whose end the exchange's clock passed by the grace period, so a quiet market still
        gets its bars (flat ones where nothing traded). The clock is the newest trade's exchange time plus
        the time since it arrived, and runs only while the stream is up and fresh: a dead stream closes
        nothing (the stale alarm then reconnects it and the repair rebuilds what it missed)."""
        while not self.stopping:
            await asyncio.sleep(min(1.0, self.tf_ms / 4000))
            for state in self.states.values():
                if not state.connected or state.stale:
                    continue
                async with state.lock:
                    newest_ms, arrived = state.clock
                    if state.bars is not None and newest_ms:
                        bars = state.bars.close_due(newest_ms + int((time.monotonic() - arrived) * 1000))
                        await self.publish_built(exchange, state, bars)

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
        state.last_published, state.last_close = bar.open_time, bar.close
        self.emit(candle_topic(state.symbol, self.tf), Candle(
            symbol=state.symbol, tf=self.tf, open_time=bar.open_time, open=bar.open, high=bar.high, low=bar.low,
            close=bar.close, volume=bar.volume, et=bar.open_time + self.tf_ms, tid=random.getrandbits(63)))
        due = state.funding_due
        if due and bar.open_time + self.tf_ms >= due and (state.funding_task is None or state.funding_task.done()):
            state.funding_task = asyncio.create_task(self.read_funding(exchange, state))

    # ----- funding (futures) ---------------------------------------------------------------------
    async def read_funding(self, exchange, state: SymbolState) -> None:
        """The settlements after the last one published, from the exchange's funding-rate history (its rate
        and the mark it settled at), published in order as `md.funding.<SYM>`; then when the next is due. Read
        at start, and again once a candle closes at or after that time: the market's clock, not this
        machine's. A settlement not in the history yet, or a next time not known (the exchange did not
        answer), is read again at the next candle close. A first start publishes only the latest settlement;
        a restart catches up at most FUNDING_CATCH_UP_MS."""
        due = state.funding_due
        if not due and state.funding_after:  # a restart: how far back to catch up, by the exchange's clock
            upcoming = await self.rest_call(state, exchange.fetch_funding_rate, state.unified)
            next_due = int((upcoming or {}).get("fundingTimestamp") or 0)
            if next_due - FUNDING_CATCH_UP_MS > state.funding_after:
                self.log.warning("funding_catch_up_bounded", symbol=state.symbol, last_published=state.funding_after,
                                 reading_from=next_due - FUNDING_CATCH_UP_MS,
                                 why="settlements older than that are not read: the store is that far behind")
                state.funding_after = next_due - FUNDING_CATCH_UP_MS
        backoff = Backoff(self.backoff_s, self.backoff_cap_s)
        for attempt in range(1, REPAIR_TRIES + 1):
            await self.publish_settlements(exchange, state)
            if not due or state.funding_after >= due or attempt == REPAIR_TRIES:
                break
            await asyncio.sleep(backoff.next_delay())  # the exchange has not recorded it yet
        if due and state.funding_after < due:
            self.log.warning("funding_not_recorded_yet", symbol=state.symbol, due=due,
                             why="the exchange's history lacks it: read again at the next candle close")
            return
        upcoming = await self.rest_call(state, exchange.fetch_funding_rate, state.unified)
        next_due = int((upcoming or {}).get("fundingTimestamp") or 0)
        # unknown (no answer, or no later time named): the next candle close asks again
        state.funding_due = next_due if next_due > state.funding_after else max(state.funding_after, 1)

    async def publish_settlements(self, exchange, state: SymbolState) -> None:
        """Every settlement in the exchange's history after the last published (paged), oldest first; at a first
        start only the latest."""
        while True:
            since, limit = (state.funding_after + 1, FUNDING_PAGE) if state.funding_after else (None, 1)
            settled = await self.rest_call(state, exchange.fetch_funding_rate_history, state.unified, since,
                                           limit) or []
            before = state.funding_after
            for entry in sorted(settled, key=lambda e: e["timestamp"]):
                if entry["timestamp"] > state.funding_after and entry.get("fundingRate") is not None:
                    state.funding_after = entry["timestamp"]
                    mark = float((entry.get("info") or {}).get("markPrice") or 0.0)
                    self.emit(funding_topic(state.symbol), FundingRate(
                        symbol=state.symbol, rate=entry["fundingRate"], mark=mark, et=entry["timestamp"],
                        tid=random.getrandbits(63)))
            if len(settled) < limit or state.funding_after == before:  # a full page: there may be more
                return

    async def backfill(self, exchange, state: SymbolState, until_open: int, reason: str) -> None:
        """Fetch every closed candle after the last published one and before `until_open`, through REST,
        retrying with backoff until it succeeds: nothing newer is published before."""
        import ccxt

        start = state.last_published + self.tf_ms if state.last_published >= 0 else until_open - self.tf_ms
        if start >= until_open:
            return
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
        self.report_gap(state, start, until_open, len(fetched), reason)

    def report_gap(self, state: SymbolState, start: int, until_open: int, backfilled: int, reason: str) -> None:
        """Candles [start, until_open) were doubtful: counted, logged and published as `md.gap.<SYM>`."""
        missing = (until_open - start) // self.tf_ms
        self.count("gaps", state.symbol, 1)
        self.count("backfilled", state.symbol, backfilled)
        self.log.warning("gap_repaired" if backfilled else "gap_not_repaired", symbol=state.symbol, reason=reason,
                         missing=missing, backfilled=backfilled)
        self.emit(b"md.gap." + state.symbol.encode(), MarketGap(
            symbol=state.symbol, tf=self.tf, from_open=start, to_open=until_open - self.tf_ms, missing=missing,
            backfilled=backfilled, reason=reason, et=until_open))

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


def _market_trade(trade: dict) -> MarketTrade:
    """A ccxt trade structure as the bar builder takes it."""
    return MarketTrade(int(trade["timestamp"]), float(trade["price"]), float(trade["amount"] or 0.0),
                       None if trade.get("id") is None else str(trade["id"]))


def _message_symbol(message: Any) -> str | None:
    """The exchange id a websocket message is about: Binance's "s", Coinbase's product id."""
    if not isinstance(message, dict):
        return None
    if "s" in message:
        return message["s"]
    try:
        return message["events"][0]["trades"][0]["product_id"]
    except (KeyError, IndexError, TypeError):
        return None


def _bar(row: list) -> Bar:
    return Bar(int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5] or 0.0))
