"""Allocator: splits capital across strategies (equal weights to start), publishes `alloc` and keeps
the current allocation in Redis; each change is stored with its reason. It also classifies the market
regime from the feed's candles (core.regime), stores each change in market_regimes and publishes it
on `regime`."""
from __future__ import annotations

import json
import time
from decimal import Decimal

from core.allocation import equal_weights, meaningful_change, performance_weights
from core.backtest import Backtester
from core.config import Settings
from core.messages import Allocation, Candle, CreateFork, ForkReplies, ForkReply, MarketRegime, candle_topic
from core.regime import RegimeDetector
from core.service import Service, main
from core.store import Store

MIN_TRADES = 2  # a validation with fewer trades says nothing: score 0


class Allocator(Service):
    background = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("allocator", settings)

    def setup(self) -> None:
        self.publisher("allocator.pub")
        last = self.store.query("SELECT weights, reason FROM allocations ORDER BY id DESC LIMIT 1")
        if last:
            self.weights = {k: Decimal(v) for k, v in json.loads(last[0]["weights"]).items()}
            self.reason = last[0]["reason"]
        if not last or set(self.weights) != set(self.settings.strategies):
            self.set_weights(equal_weights(self.settings.strategies), "equal weights until the first validation cycle")
        else:
            self.publish()
        self.forks = self.client("forks.rep", ForkReplies, timeout_ms=15_000, retries=1)
        self.next_validation: int | None = None
        symbols = self.settings.symbols
        self.detector = RegimeDetector(symbols[0], symbols[1] if len(symbols) > 1 else None)
        warm = self.detector.rules.window + self.detector.rules.slope_bars + 10
        history = {s: self.store.recent_candles(s, warm, self.settings.timeframe) for s in symbols[:2]}
        for candle in sorted((c for cs in history.values() for c in cs), key=lambda c: (c.open_time, c.symbol != symbols[0])):
            reading = self.detector.update(candle)  # warm up after a restart: no re-announcement
            if reading is not None:
                self.detector.confirm(reading)
        self.subscribe([self.settings.endpoint("feed.pub")],
                       [candle_topic(symbol, self.settings.timeframe) for symbol in symbols[:2]], self.on_candle)

    def observe_regime(self, candle: Candle) -> None:
        reading = self.detector.update(candle)
        if reading is None or not self.detector.confirm(reading):
            return
        metrics = reading.metrics()
        self.store.insert_many("market_regimes", ("event_time", "regime", "metrics", "created_at"),
                               [(candle.et, reading.regime, json.dumps(metrics), time.time())])
        self.hot.put("regime", {"regime": reading.regime, "metrics": metrics, "event_time": candle.et})
        self.pub.publish(b"regime", MarketRegime(regime=reading.regime, metrics=metrics, et=candle.et))
        self.log.info("regime_changed", regime=reading.regime, **metrics)

    def on_candle(self, topic: bytes, candle: Candle) -> None:
        self.event_time = max(self.event_time, candle.et)
        self.observe_regime(candle)
        every_ms = int(self.settings.validation_every_min * 60_000)
        if self.next_validation is None:
            self.next_validation = candle.et + every_ms  # a first period of data before the first validation
        elif candle.et >= self.next_validation:
            self.next_validation = candle.et + every_ms
            self.validate()

    # ----- strategy validation on a fork, and the weights it yields --------------------------------
    def validate(self) -> None:
        """Backtest every strategy on a fork of the store over the recent window, then reweight."""
        s = self.settings
        reply = self.forks.request(CreateFork(purpose="validation", requester=self.name,
                                              ttl_s=int(s.validation_every_min * 60 * 2), src=self.name))
        if not isinstance(reply, ForkReply) or not reply.ok:
            self.log.warning("validation_skipped", why=getattr(reply, "reason", None) or "fork manager not answering")
            return
        since = self.event_time - int(s.validation_window_min * 60_000)
        fork = Store(reply.path, read_only=True)
        try:
            series = {sym: [b for b in fork.bars(sym, s.timeframe) if b.open_time >= since] for sym in s.symbols}
        finally:
            fork.close()
        results = {}
        for strategy in s.strategies:
            report = Backtester({strategy: s.strategy_params.get(strategy)}, s.symbols, s, s.timeframe).run(series)
            results[strategy] = {"sharpe": report.sharpe, "roi": report.roi, "max_drawdown": report.max_drawdown,
                                 "trades": report.trades, "bars": report.bars}
        self.store.merge_fork_results(reply.fork_id, {"validation": results})
        scores = {name: r["sharpe"] if r["trades"] >= MIN_TRADES else 0.0 for name, r in results.items()}
        weights = performance_weights(scores, s.alloc_min_pct, s.alloc_max_pct)
        reason = f"validation on {reply.fork_id} over {s.validation_window_min:g} min: " + "; ".join(
            f"{name} Sharpe {r['sharpe']:.2f} ROI {r['roi'] * 100:.2f}% ({r['trades']} trades)"
            for name, r in results.items())
        self.log.info("validated", fork_id=reply.fork_id, results=results)
        if meaningful_change(self.weights, weights, s.alloc_change_pct):
            self.set_weights(weights, reason)

    def set_weights(self, weights: dict[str, Decimal], reason: str) -> None:
        """A change of allocation: stored with its reason, kept in Redis, published."""
        self.weights, self.reason = weights, reason
        shown = {k: str(v) for k, v in weights.items()}
        self.store.insert_many("allocations", ("event_time", "weights", "reason", "created_at"),
                               [(self.event_time, json.dumps(shown), reason, time.time())])
        self.log.info("allocation_changed", weights=shown, reason=reason)
        self.publish()

    def publish(self) -> None:
        """On a change only; a late joiner reads the current allocation from Redis."""
        self.hot.put("alloc", {"weights": {k: str(v) for k, v in self.weights.items()}, "reason": self.reason})
        self.pub.publish(b"alloc", Allocation(weights=self.weights, reason=self.reason, et=self.event_time))


if __name__ == "__main__":
    main(Allocator)
