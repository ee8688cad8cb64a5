"""Stochastic oscillator: %K crossing %D upward while oversold buys, downward while overbought sells."""
from __future__ import annotations

from pydantic import Field, model_validator

from meshtrader.domain.indicators import SMA, Cross, RollingExtreme
from meshtrader.strategies.base import Decision, ShortLegParams, Strategy, feature_values, register
from meshtrader.wire.messages import Candle


class StochasticParams(ShortLegParams):
    k_period: int = Field(14, ge=2, description="bars of %K (the close within the range)")
    d_period: int = Field(3, ge=1, description="bars of %D (the average of %K)")
    oversold: float = Field(20.0, ge=0, le=100, description="buy on %K crossing %D upward below this (oversold)")
    overbought: float = Field(80.0, ge=0, le=100, description="sell on %K crossing %D downward above this (overbought)")

    @model_validator(mode="after")
    def _levels(self) -> StochasticParams:
        if self.oversold >= self.overbought:
            raise ValueError(f"oversold ({self.oversold}) must be below overbought ({self.overbought})")
        return self


@register
class Stochastic(Strategy):
    name = "stochastic"
    Params = StochasticParams
    search_space = {"k_period": [9, 14, 21], "d_period": [3, 5], "oversold": [15.0, 20.0, 30.0]}
    price_features = frozenset({"channel_high", "channel_low"})

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        p = self.params
        self.highs, self.lows = RollingExtreme(p.k_period, True), RollingExtreme(p.k_period, False)
        self.d, self.cross = SMA(p.d_period), Cross()

    @property
    def warmup(self) -> int:
        return self.params.k_period + self.params.d_period + 1

    def decide(self, candle: Candle) -> Decision | None:
        high, low = self.highs.update(candle.high), self.lows.update(candle.low)
        if high is None:
            return None
        k = 50.0 if high == low else (candle.close - low) / (high - low) * 100
        d = self.d.update(k)
        crossed = self.cross.update(k, d)
        if crossed > 0 and k < self.params.oversold:
            return Decision("buy", 0.6, f"%K {k:.1f} crossed above %D {d:.1f} while oversold")
        if crossed < 0 and k > self.params.overbought:
            return Decision(self.bearish, 0.6, f"%K {k:.1f} crossed below %D {d:.1f} while overbought")
        return None

    def features(self) -> dict[str, float]:
        d = self.d.value
        if d is None:
            return {}
        k = d + self.cross.diff  # the cross keeps %K - %D: %K back, to a rounding
        return feature_values(k=k, d=d, channel_high=self.highs.value, channel_low=self.lows.value)
