"""Bollinger Bands: buy a close back inside from below the lower band, sell at the middle band; with the
short leg (futures), short a close back inside from above the upper band and cover at the middle."""
from __future__ import annotations

from pydantic import Field

from meshtrader.domain.indicators import RollingStats
from meshtrader.strategies.base import Decision, ShortLegParams, Strategy, feature_values, register
from meshtrader.wire.messages import Candle


class BollingerParams(ShortLegParams):
    period: int = Field(20, ge=2, description="bars of the moving average and standard deviation")
    k: float = Field(2.0, gt=0, description="band width in standard deviations")


@register
class Bollinger(Strategy):
    name = "bollinger"
    Params = BollingerParams
    search_space = {"period": [14, 20, 30, 50], "k": [1.5, 2.0, 2.5, 3.0]}
    price_features = frozenset({"band_upper", "band_middle", "band_lower"})

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        self.stats = RollingStats(self.params.period)
        self.below = False  # the previous close was under the lower band
        self.above = False  # ... over the upper band

    @property
    def warmup(self) -> int:
        return self.params.period + 1

    def decide(self, candle: Candle) -> Decision | None:
        mean = self.stats.update(candle.close)
        if mean is None:
            return None
        width = self.params.k * self.stats.std
        lower, upper = mean - width, mean + width
        was_below, self.below = self.below, candle.close < lower
        was_above, self.above = self.above, candle.close > upper
        if was_below and not self.below:
            return Decision("buy", 0.6, f"close {candle.close} back above the lower band {lower:.2f}")
        if self.params.short and was_above and not self.above:
            return Decision("short", 0.6, f"close {candle.close} back under the upper band {upper:.2f}")
        if candle.close > mean:
            return Decision("sell", 0.5, f"close {candle.close} above the middle band {mean:.2f}")
        if self.params.short and candle.close < mean:
            return Decision("cover", 0.5, f"close {candle.close} under the middle band {mean:.2f}")
        return None

    def features(self) -> dict[str, float]:
        mean, std = self.stats.mean, self.stats.std
        if mean is None or std is None:
            return {}
        width = self.params.k * std
        return feature_values(band_upper=mean + width, band_middle=mean, band_lower=mean - width)
