"""SMA crossover, plain: buy when the fast average crosses above the slow one, sell when it crosses
below. The reference strategy for comparing backtesters, and the one the vectorized sweep supports."""
from __future__ import annotations

from pydantic import Field

from meshtrader.domain.indicators import SMA, Cross
from meshtrader.strategies.base import Decision, FastSlowParams, Strategy, feature_values, register
from meshtrader.wire.messages import Candle


class SmaCrossParams(FastSlowParams):
    fast: int = Field(10, ge=1, description="bars of the fast SMA")
    slow: int = Field(30, ge=2, description="bars of the slow SMA")


@register
class SmaCross(Strategy):
    name = "sma_cross"
    Params = SmaCrossParams
    search_space = {"fast": [5, 10, 20], "slow": [30, 50, 100]}
    price_features = frozenset({"sma_fast", "sma_slow"})

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        self.fast, self.slow, self.cross = SMA(self.params.fast), SMA(self.params.slow), Cross()

    @property
    def warmup(self) -> int:
        return self.params.slow + 1

    def decide(self, candle: Candle) -> Decision | None:
        crossed = self.cross.update(self.fast.update(candle.close), self.slow.update(candle.close))
        if crossed > 0:
            return Decision("buy", 0.6, f"SMA{self.params.fast} crossed above SMA{self.params.slow}")
        if crossed < 0:
            return Decision(self.bearish, 0.6, f"SMA{self.params.fast} crossed below SMA{self.params.slow}")
        return None

    def features(self) -> dict[str, float]:
        if self.slow.value is None:
            return {}
        return feature_values(sma_fast=self.fast.value, sma_slow=self.slow.value)
