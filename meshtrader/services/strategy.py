"""Strategy worker: one process per strategy. Warms its indicators from the feed's recent candles
(or the store's, if the feed is down), then turns each closed candle (or tick) into signals.

Its parameters are the configured ones, or the last set the allocator adopted after a walk-forward
optimisation (kept in the store): a new set arrives on `params.<strategy>` and is swapped in without a
restart, warmed up on recent candles first so its first decision is on whole indicators.

Its instances' features (the inputs of their decisions) go to hot state for the dashboard, from a timer
and only when a bar moved them: never between a candle and its signal.

The strategy is any registered one: a module of meshtrader/strategies/, or a file named by
MESH_STRATEGY_FILES (loaded with the settings)."""
from __future__ import annotations

import sys

from meshtrader.domain.candles import timeframe_ms
from meshtrader.domain.indicators import RealisedVolatility
from meshtrader.ops.features import features_key, features_snapshot
from meshtrader.runtime.config import ConfigError, Settings
from meshtrader.services.base import Service, main
from meshtrader.strategies import Decision, ParameterError, Strategy, create
from meshtrader.wire.messages import (
    Candle,
    FeedReplies,
    FundingRate,
    ParamsUpdate,
    RecentCandles,
    Signal,
    Tick,
    candle_topic,
    funding_topic,
    signal_topic,
    tick_topic,
)

FEATURES_EVERY_S = 0.5  # features are published at most this often


class StrategyWorker(Service):
    def __init__(self, settings: Settings, strategy: str) -> None:
        if strategy not in settings.strategies:
            raise ConfigError(f"strategy worker {strategy!r}: not one of MESH_STRATEGIES ({', '.join(settings.strategies)})")
        super().__init__(f"strategy_{strategy}", settings)
        self.strategy = strategy
        self.params = settings.strategy_params.get(strategy)
        self.instances: dict[str, Strategy] = {s: create(strategy, s, self.params) for s in settings.symbols}
        self.last_bar: dict[str, int] = {s: -1 for s in settings.symbols}
        self.features_moved = False  # since they were last published
        self.topic = signal_topic(strategy)
        self.tf = settings.timeframe
        self.tf_ms = timeframe_ms(self.tf)
        self.signals = self.metrics.counter("mesh_signals_total", "signals emitted, by strategy and side",
                                            ("strategy", "side"))
        for side in ("buy", "sell", "short", "cover") if settings.market == "usdm" else ("buy", "sell"):
            self.signals.labels(self.name, self.strategy, side)  # at 0 from the start
        # volatility-targeted sizing: each symbol's realised daily volatility goes with its signals, kept
        # from the same candles the strategy sees, as the backtester keeps it
        self.volatility = {s: RealisedVolatility(settings.vol_lookback, self.tf_ms) for s in settings.symbols} \
            if settings.sizing == "volatility" else {}

    def setup(self) -> None:
        adopted = self.store.get_state(f"params.{self.strategy}")
        if adopted is not None and adopted != self.params:
            self.use_params(adopted, "adopted after an optimisation")
        self.publisher(f"strategy.{self.strategy}.pub")
        kind = type(next(iter(self.instances.values())))
        prefixes = [candle_topic(s, self.tf) for s in self.settings.symbols] if kind.wants("decide") else []
        if kind.wants("on_tick"):
            prefixes += [tick_topic(s) for s in self.settings.symbols]
        if kind.wants("on_funding"):
            prefixes += [funding_topic(s) for s in self.settings.symbols]
        # Subscribe before asking for history, so nothing falls between the snapshot and the stream.
        self.subscribe([self.settings.endpoint("feed.pub")], prefixes, self.on_market)
        self.subscribe([self.settings.endpoint("allocator.pub")], [b"params." + self.strategy.encode()],
                       self.on_params)
        # one client for the worker's life: every warm-up (each adopted parameter set) asks through it, so
        # adoptions leave no socket behind (a client per warm-up kept two descriptors open per adoption);
        # stoppable: a worker told to stop while the feed is down does not sit out every symbol's retries
        self.feed = self.client("feed.rep", FeedReplies, timeout_ms=1000, retries=2, stoppable=True)
        self.warm_up()
        self.loop.every(FEATURES_EVERY_S, self.publish_features, first_in=0)

    def use_params(self, params: dict, why: str) -> bool:
        try:
            instances = {s: create(self.strategy, s, params) for s in self.settings.symbols}
        except ParameterError as error:
            self.log.error("params_rejected", params=params, error=str(error))
            return False
        self.instances, self.params = instances, params
        self.log.info("params_in_use", params=params, why=why)
        return True

    def on_params(self, topic: bytes, update: ParamsUpdate) -> None:
        """New parameters, live: fresh instances warmed on recent candles replace the old ones."""
        if update.strategy != self.strategy or update.params == self.params:
            return
        if self.use_params(update.params, update.reason):
            self.last_bar = {s: -1 for s in self.settings.symbols}
            self.warm_up()

    def warm_up(self) -> None:
        for symbol, instance in self.instances.items():
            wanted = instance.warmup + 10
            reply = self.feed.request(RecentCandles(symbol=symbol, n=wanted, src=self.name))
            if reply is not None and reply.ok:
                candles, source = reply.candles, "feed"
            else:
                candles, source = self.store.recent_candles(symbol, wanted, self.tf), "store"
            for candle in candles:
                if self.volatility:
                    self.volatility[symbol].update(candle.close)
                instance.decide(candle)
                self.last_bar[symbol] = candle.open_time
                self.event_time = max(self.event_time, candle.et)
            self.log.info("warmed_up", symbol=symbol, candles=len(candles), source=source,
                          ready=len(candles) >= instance.warmup)
        self.features_moved = True

    def on_market(self, topic: bytes, event: Candle | Tick | FundingRate) -> None:
        self.event_time = max(self.event_time, event.et)
        instance = self.instances.get(event.symbol)
        if instance is None:
            return
        if isinstance(event, FundingRate):
            instance.on_funding(event)
            self.features_moved = True
            return
        if isinstance(event, Tick):
            decision = instance.on_tick(event)
            if decision:
                self.emit(decision, event.symbol, event.et, event.price, event)
            return
        last = self.last_bar[event.symbol]
        if event.open_time <= last:  # already seen (snapshot overlap or a feed replaying after restart)
            return
        if last >= 0 and event.open_time > last + self.tf_ms:
            self.log.warning("candle_gap", symbol=event.symbol, missing=(event.open_time - last) // self.tf_ms - 1)
        self.last_bar[event.symbol] = event.open_time
        if self.volatility:
            self.volatility[event.symbol].update(event.close)
        decision = instance.decide(event)
        if decision:
            self.emit(decision, event.symbol, event.open_time, event.close, event)
        self.features_moved = True

    def publish_features(self) -> None:
        """The timer's: the instances' features to hot state, if a bar (or funding) moved them."""
        if self.features_moved:
            self.features_moved = False
            self.hot.put(features_key(self.strategy), features_snapshot(self.instances, self.last_bar))

    def emit(self, decision: Decision, symbol: str, bar_time: int, price: float, origin: Candle | Tick) -> None:
        signal = Signal(signal_id=f"{self.strategy}:{symbol}:{bar_time}:{decision.side}", strategy=self.strategy,
                        symbol=symbol, side=decision.side, confidence=decision.confidence, reason=decision.reason,
                        price=price, bar_volume=origin.volume if isinstance(origin, Candle) else 0.0,
                        stop=decision.stop or 0.0,
                        volatility=self.volatility[symbol].value if self.volatility else 0.0,
                        origin_ns=origin.st, et=origin.et, tid=origin.tid)
        self.pub.publish(self.topic, signal)
        self.signals.labels(self.name, self.strategy, decision.side).inc()
        self.log.debug("signal", trace_id=origin.tid, signal_id=signal.signal_id, reason=decision.reason)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m meshtrader.services.strategy NAME")
    main(lambda settings: StrategyWorker(settings, sys.argv[1]))
