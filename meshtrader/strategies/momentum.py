"""Momentum: a fast/slow moving-average crossover, entries filtered by RSI."""
from __future__ import annotations

from pydantic import Field

from meshtrader.domain.indicators import RSI, SMA, Cross
from meshtrader.strategies.base import Decision, FastSlowParams, Strategy, feature_values, register
from meshtrader.wire.messages import Candle


class MomentumParams(FastSlowParams):
    fast: int = Field(5, ge=1, description="bars of the fast SMA")
    slow: int = Field(20, ge=2, description="bars of the slow SMA")
    rsi_period: int = Field(14, ge=2, description="bars of the RSI")
    rsi_max: float = Field(70.0, gt=0, le=100, description="no entry above this RSI (overbought)")


@register
class Momentum(Strategy):
    name = "momentum"
    Params = MomentumParams
    search_space = {"fast": [3, 5, 8, 12], "slow": [20, 30, 50], "rsi_max": [65.0, 70.0, 80.0]}
    price_features = frozenset({"sma_fast", "sma_slow"})

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        p = self.params
        self.fast, self.slow, self.rsi, self.cross = SMA(p.fast), SMA(p.slow), RSI(p.rsi_period), Cross()

    @property
    def warmup(self) -> int:
        return max(self.params.slow, self.params.rsi_period + 1) + 1

    def decide(self, candle: Candle) -> Decision | None:
        fast, slow, rsi = self.fast.update(candle.close), self.slow.update(candle.close), self.rsi.update(candle.close)
        crossed = self.cross.update(fast, slow)
        if crossed > 0 and rsi is not None and rsi < self.params.rsi_max:
            gap = (fast - slow) / slow
            return Decision("buy", min(1.0, 0.5 + gap * 100), f"SMA{self.params.fast} crossed above "
                            f"SMA{self.params.slow}, RSI {rsi:.1f} < {self.params.rsi_max}")
        if crossed < 0:
            return Decision(self.bearish, 0.6, f"SMA{self.params.fast} crossed below SMA{self.params.slow}")
        return None

    def features(self) -> dict[str, float]:
        if self.slow.value is None or self.rsi.value is None:
            return {}
        return feature_values(sma_fast=self.fast.value, sma_slow=self.slow.value, rsi=self.rsi.value)
