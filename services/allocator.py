"""Allocator: splits capital across strategies (equal weights to start), publishes `alloc` and keeps
the current allocation in Redis; each change is stored with its reason. It also classifies the market
regime from the feed's candles (core.regime), stores each change in market_regimes and publishes it
on `regime`."""
from __future__ import annotations

import json
import time

from core.allocation import equal_weights
from core.config import Settings
from core.messages import Allocation, Candle, MarketRegime, candle_topic
from core.regime import RegimeDetector
from core.service import Service, main


class Allocator(Service):
    background = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("allocator", settings)

    def setup(self) -> None:
        self.publisher("allocator.pub")
        self.weights = equal_weights(self.settings.strategies)
        self.reason = "equal weights until the first validation cycle"
        last = self.store.scalar("SELECT weights FROM allocations ORDER BY id DESC LIMIT 1")
        current = {k: str(v) for k, v in self.weights.items()}
        if last is None or json.loads(last) != current:
            self.store.insert_many("allocations", ("event_time", "weights", "reason", "created_at"),
                                   [(self.event_time, json.dumps(current), self.reason, time.time())])
            self.log.info("allocation_changed", weights=current, reason=self.reason)
        self.publish()
        self.loop.every(5.0, self.publish)
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

    def on_candle(self, topic: bytes, candle: Candle) -> None:
        self.event_time = max(self.event_time, candle.et)
        reading = self.detector.update(candle)
        if reading is None or not self.detector.confirm(reading):
            return
        metrics = reading.metrics()
        self.store.insert_many("market_regimes", ("event_time", "regime", "metrics", "created_at"),
                               [(candle.et, reading.regime, json.dumps(metrics), time.time())])
        self.hot.put("regime", {"regime": reading.regime, "metrics": metrics, "event_time": candle.et})
        self.pub.publish(b"regime", MarketRegime(regime=reading.regime, metrics=metrics, et=candle.et))
        self.log.info("regime_changed", regime=reading.regime, **metrics)

    def publish(self) -> None:
        """Republished so late joiners converge; the stored history only records changes."""
        self.hot.put("alloc", {"weights": {k: str(v) for k, v in self.weights.items()}, "reason": self.reason})
        self.pub.publish(b"alloc", Allocation(weights=self.weights, reason=self.reason, et=self.event_time))


if __name__ == "__main__":
    main(Allocator)
