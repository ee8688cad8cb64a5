"""Benchmark strategy: a signal on every tick (alternating buy and sell), so every tick is timed."""
from __future__ import annotations

from meshtrader.strategies.base import Decision, Strategy, register
from meshtrader.wire.messages import Tick


@register
class EveryTick(Strategy):
    name = "bench"

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        self._next = "buy"

    def on_tick(self, tick: Tick) -> Decision | None:
        side, self._next = self._next, ("sell" if self._next == "buy" else "buy")
        return Decision(side, 1.0, "benchmark: every tick")
