"""Feed handler: the mesh's door to the market. Replays the bundled candles in event-time order as ticks
and closed candles, or streams live through ccxt (meshtrader.marketdata.live); writes candles to the store, and
answers "last N candles" for late joiners."""
from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterator

from meshtrader.domain.candles import Bar, intrabar_path, merged_timeline, resample, timeframe_ms
from meshtrader.domain.money import to_decimal
from meshtrader.marketdata.files import (
    DataError,
    find_candle_file,
    find_series_file,
    load_bars,
    load_funding,
    load_trades,
)
from meshtrader.marketdata.live import BOOK_LEVELS, LiveMarketData
from meshtrader.marketdata.trade_bars import MarketTrade, TradeBars
from meshtrader.runtime.config import Settings
from meshtrader.services.base import Service, main
from meshtrader.wire.codec import decode_event
from meshtrader.wire.messages import (
    Candle,
    CandlesReply,
    ErrorReply,
    FeedRequests,
    FeedStatus,
    FundingRate,
    RecentCandles,
    Tick,
    candle_topic,
    funding_topic,
    tick_topic,
)

SOURCE_TF = "1m"  # the candle files' timeframe; longer ones are resampled from it, shorter built from trades
MAX_MINUTES_PER_STEP = 200  # keeps the REP socket answering during fast replays
MAX_TRADES_PER_STEP = 2000


class Feed(Service):
    def __init__(self, settings: Settings) -> None:
        super().__init__("feed", settings)
        self.tf = settings.timeframe
        self.tf_ms = timeframe_ms(self.tf)
        self.history: dict[str, deque[Candle]] = {}
        self.unsaved: list[Candle] = []
        self.finished = False
        self.replay_started: float | None = None  # monotonic time the replay's clock starts from
        self.replay_origin = 0  # the market time (ms) it starts from

    def setup(self) -> None:
        s = self.settings
        self.publisher("feed.pub")
        self.serve("feed.rep", FeedRequests, self.on_request)
        for symbol in s.symbols:
            stored = self.store.recent_candles(symbol, s.feed_history, self.tf)
            self.history[symbol] = deque(stored, maxlen=s.feed_history)
            if stored:
                self.event_time = max(self.event_time, stored[-1].et)
        self.rejected_total = self.metrics.counter("mesh_candles_rejected_total", "candles that failed validation",
                                                   ("symbol",))
        self.events = self.metrics.counter("mesh_feed_events_total", "reconnects, gaps, backfilled candles, "
                                           "rate limits, malformed messages, stalls, late trades", ("symbol", "kind"))
        self.stale = self.metrics.gauge("mesh_feed_stale", "1 while the symbol's market data is stale (live stream: "
                                        "the alarm that restricts trading to exits)", ("symbol",))
        self.lag = self.metrics.gauge("mesh_feed_lag_seconds", "how far the market data is behind its clock (live: "
                                      "the exchange's; replay: the replay's schedule)").labels(self.name)
        for symbol in s.symbols:  # at 0 from the start, so a first gap or stale alarm is a change of a series
            self.events.labels(self.name, symbol, "gaps")
            self.stale.labels(self.name, symbol).set(0)
        self.loop.every(1.0, self.gauge_lag)
        if s.feed == "live":
            self.start_live()
        else:
            self.start_replay()
        self.loop.every(0.25, self.save_candles)

    # ----- replay of files ----------------------------------------------------------------------
    def start_replay(self) -> None:
        s = self.settings
        if s.replay == "trades" or self.tf_ms < timeframe_ms(SOURCE_TF):
            if s.replay != "trades":
                self.log.warning("replaying_trades", timeframe=self.tf, why=f"the candle files are {SOURCE_TF}: "
                                 "shorter candles are built from the trade tape")
            return self.start_trade_replay()
        series: dict[str, list[Bar]] = {}
        start: dict[str, int] = {}
        for symbol in s.symbols:
            try:
                bars, rejected = load_bars(find_candle_file(s.data_dir, symbol, SOURCE_TF))
                if self.tf != SOURCE_TF:
                    bars = resample(bars, self.tf_ms)
            except DataError as error:
                self.log.error("data_unavailable", symbol=symbol, error=str(error))
                bars, rejected = [], []
            for problem in rejected[:20]:
                self.log.warning("candle_rejected", symbol=symbol, problem=problem)
            self.rejected_total.labels(self.name, symbol).inc(len(rejected))
            series[symbol] = bars
            stored = self.history[symbol]
            start[symbol] = max(s.replay_start, _first_after(bars, stored[-1].open_time if stored else None))
        self.funding = {symbol: deque(self.load_funding(symbol, series[symbol], start[symbol])) for symbol in s.symbols}
        self.log.info("replay_ready", speed=s.replay_speed, start=start, candles={k: len(v) for k, v in series.items()},
                      funding={k: len(v) for k, v in self.funding.items()})
        self.timeline = merged_timeline(series, start)
        self._lookahead: tuple[str, Bar] | None = next(self.timeline, None)
        self.replay_origin = self._lookahead[1].open_time if self._lookahead else self.event_time
        self.minutes_emitted = 0
        self.when_mesh_ready(lambda: self.loop.every(min(1.0 / s.replay_speed, 0.005), self.replay_step, first_in=0))

    # ----- live through ccxt --------------------------------------------------------------------
    def start_live(self) -> None:
        s = self.settings
        endpoint = self.inbox("livefeed", self.on_live)
        connected = self.metrics.gauge("mesh_feed_connected", "1 while the market data stream is up", ("symbol",))
        self.added_latency = self.metrics.histogram("mesh_feed_added_latency_seconds",
                                                    "websocket message received to tick published").labels(self.name)

        def count(kind: str, symbol: str, amount: float) -> None:
            if kind == "connected":
                connected.labels(self.name, symbol).set(amount)
            elif kind == "rejected":
                self.rejected_total.labels(self.name, symbol).inc(amount)
            else:
                self.events.labels(self.name, symbol, kind).inc(amount)

        resume = {sym: (h[-1].open_time, h[-1].close) for sym, h in self.history.items() if h}
        self.live = LiveMarketData(s.exchange, s.exchange_url, s.symbols, self.tf, endpoint, self.ctx, self.log, count,
                                   backoff_s=s.feed_backoff_s, stale_s=s.feed_stale_s, resume_from=resume,
                                   transport=s.feed_transport, poll_s=s.feed_poll_s,
                                   book_levels=BOOK_LEVELS if s.fill_model == "book" else 0,
                                   futures=s.market == "usdm",
                                   funding_after={sym: self.store.last_funding_settlement(sym) for sym in s.symbols})
        self.live.start()
        self.log.info("live_feed_started", exchange=s.exchange, url=s.exchange_url, symbols=s.symbols)

    def on_live(self, messages: Iterator[list[bytes]]) -> None:
        for topic, payload, received in messages:
            event = decode_event(topic, payload)
            self.event_time = max(self.event_time, event.et)
            if isinstance(event, Candle):
                self.accept_candle(event)
            elif isinstance(event, FundingRate):
                self.publish_funding(event)
            else:
                if isinstance(event, FeedStatus):
                    self.stale.labels(self.name, event.symbol).set(event.stale)
                self.pub.publish(topic, event)
            received_ns = int.from_bytes(received, "little")
            if received_ns:
                self.added_latency.observe((time.monotonic_ns() - received_ns) / 1e9)

    def accept_candle(self, candle: Candle) -> None:
        self.pub.publish(candle_topic(candle.symbol, candle.tf), candle)
        self.history[candle.symbol].append(candle)
        self.unsaved.append(candle)

    def replay_step(self) -> None:
        due = int((time.monotonic() - self.replay_started) * self.settings.replay_speed) - self.minutes_emitted
        for _ in range(min(due, MAX_MINUTES_PER_STEP)):
            if not self.emit_minute():
                return

    def emit_minute(self) -> bool:
        """Publish every symbol's next bar of the same minute: ticks first, then the closed candles."""
        if self._lookahead is None:
            if not self.finished:
                self.finished = True
                self.log.info("replay_finished", event_time=self.event_time)
            return False
        minute = self._lookahead[1].open_time
        bars: list[tuple[str, Bar]] = []
        while self._lookahead is not None and self._lookahead[1].open_time == minute:
            bars.append(self._lookahead)
            self._lookahead = next(self.timeline, None)
        ticks = self.settings.ticks_per_candle
        spacing = self.tf_ms // ticks
        for symbol, bar in bars:
            topic = tick_topic(symbol)
            for i, price in enumerate(intrabar_path(bar, ticks)):
                self.event_time = bar.open_time + i * spacing
                self.pub.publish(topic, Tick(symbol=symbol, price=price, et=self.event_time,
                                             tid=random.getrandbits(63)))
        for symbol, bar in bars:
            candle = Candle(symbol=symbol, tf=self.tf, open_time=bar.open_time, open=bar.open, high=bar.high,
                            low=bar.low, close=bar.close, volume=bar.volume, et=bar.open_time + self.tf_ms,
                            tid=random.getrandbits(63))
            self.event_time = candle.et
            self.accept_candle(candle)
        self.emit_funding(minute + self.tf_ms, {symbol: bar.close for symbol, bar in bars})
        self.minutes_emitted += 1
        return True

    def load_funding(self, symbol: str, bars: list[Bar], start: int) -> list[tuple[int, float]]:
        path = find_series_file(self.settings.data_dir, symbol, "funding")
        if path is None or start >= len(bars):
            return []
        return [(t, rate) for t, rate in load_funding(path) if t >= bars[start].open_time]

    def emit_funding(self, until: int, closes: dict[str, float]) -> None:
        """Funding settlements up to `until` (market time), so strategies can trade around them and paper
        futures positions pay or receive them, at the mark: the close of the candle the settlement ends."""
        for symbol, pending in self.funding.items():
            while pending and pending[0][0] <= until:
                settled, rate = pending.popleft()
                self.publish_funding(FundingRate(symbol=symbol, rate=rate, mark=closes.get(symbol, 0.0), et=settled,
                                                 tid=random.getrandbits(63)))

    def publish_funding(self, funding: FundingRate) -> None:
        """A settlement is recorded before it is published: an executor that was down when it went by books it
        from the store (services.executor catch_up_funding)."""
        self.store.record_funding(funding.symbol, funding.et, to_decimal(funding.rate),
                                  to_decimal(funding.mark) if funding.mark else None)
        self.pub.publish(funding_topic(funding.symbol), funding)

    # ----- replay of the raw trade tape ---------------------------------------------------------
    def start_trade_replay(self) -> None:
        """Every trade becomes a tick; candles are built from the trades (meshtrader.marketdata.trade_bars), as
        the live trade stream builds them."""
        tapes = []
        for symbol in self.settings.symbols:
            path = find_series_file(self.settings.data_dir, symbol, "trades")
            if path is None:
                self.log.error("data_unavailable", symbol=symbol, error=f"no trades file for {symbol}")
                continue
            resume = self.history[symbol][-1].open_time + self.tf_ms if self.history[symbol] else 0
            tapes.append([(t.time, symbol, t) for t in load_trades(path) if t.time >= resume])
        self.tape = sorted((item for tape in tapes for item in tape), key=lambda item: item[0])  # stable: tape order
        self.tape_index = 0
        self.builders = {symbol: TradeBars(self.tf_ms) for symbol in self.settings.symbols}
        self.tape_origin = self.replay_origin = self.tape[0][0] if self.tape else 0
        self.log.info("trade_replay_ready", trades=len(self.tape), speed=self.settings.replay_speed)
        self.when_mesh_ready(lambda: self.loop.every(0.005, self.trade_step, first_in=0))

    def when_mesh_ready(self, start: Callable[[], None]) -> None:
        """A replay starts once the strategy workers, the risk guard and the executor are up (their
        heartbeats are in Redis), so no one misses its first candles; after MESH_REPLAY_WAIT_S it starts anyway."""
        wanted = {f"hb:{name}" for name in self.settings.service_names()
                  if name.startswith("strategy_") or name in ("risk", "executor")}
        deadline = time.monotonic() + self.settings.replay_wait_s

        def check() -> None:
            missing = wanted - set(self.hot.get_many("hb:*"))
            if missing and time.monotonic() < deadline:
                return
            if missing:
                self.log.warning("replay_starting_without", services=sorted(m[3:] for m in missing))
            self.loop.cancel(checking)
            self.replay_started = time.monotonic() + 0.2  # subscriptions travel once the peers are up
            start()

        checking = self.loop.every(0.2, check, first_in=0)

    def trade_step(self) -> None:
        market_now = self.tape_origin + (time.monotonic() - self.replay_started) * self.settings.replay_speed * self.tf_ms
        for _ in range(MAX_TRADES_PER_STEP):
            if self.tape_index >= len(self.tape):
                if not self.finished:
                    self.finished = True
                    self.log.info("replay_finished", event_time=self.event_time)
                return
            at, symbol, trade = self.tape[self.tape_index]
            if at > market_now:
                return
            self.tape_index += 1
            self.event_time = max(self.event_time, at)
            for bar in self.builders[symbol].add(MarketTrade(at, trade.price, trade.qty, None)) or []:
                self.accept_candle(Candle(symbol=symbol, tf=self.tf, open_time=bar.open_time, open=bar.open,
                                          high=bar.high, low=bar.low, close=bar.close, volume=bar.volume,
                                          et=bar.open_time + self.tf_ms, tid=random.getrandbits(63)))
            self.pub.publish(tick_topic(symbol), Tick(symbol=symbol, price=trade.price, qty=trade.qty, et=at,
                                                      tid=random.getrandbits(63)))

    def gauge_lag(self) -> None:
        """Once a second: how far the market data is behind, in wall seconds. Live, the clock against the
        newest exchange event; replaying, the replay's schedule against the newest replayed event. A stream
        or a replay that stops (or ends) makes it grow; before the first event it is 0."""
        if self.settings.feed == "live":
            behind = time.time() - self.event_time / 1000 if self.event_time else 0.0
        elif self.replay_started is None:
            behind = 0.0  # waiting for the mesh to be up
        else:
            market_ms_per_s = self.settings.replay_speed * self.tf_ms
            behind = time.monotonic() - self.replay_started - (self.event_time - self.replay_origin) / market_ms_per_s
        self.lag.set(max(0.0, behind))

    def save_candles(self) -> None:
        if self.unsaved:
            batch, self.unsaved = self.unsaved, []
            self.store.insert_candles(batch)

    def on_request(self, request: RecentCandles) -> CandlesReply | ErrorReply:
        history = self.history.get(request.symbol)
        if history is None:
            return ErrorReply(error=f"unknown symbol {request.symbol!r}; this feed serves {', '.join(self.history)}")
        n = max(0, min(request.n, len(history)))
        return CandlesReply(candles=list(history)[len(history) - n:])

    def teardown(self) -> None:
        if self.settings.feed == "live":
            self.live.stop()
        self.save_candles()


def _first_after(bars: list[Bar], open_time: int | None) -> int:
    if open_time is None:
        return 0
    low, high = 0, len(bars)
    while low < high:
        mid = (low + high) // 2
        if bars[mid].open_time <= open_time:
            low = mid + 1
        else:
            high = mid
    return low


if __name__ == "__main__":
    main(Feed)
