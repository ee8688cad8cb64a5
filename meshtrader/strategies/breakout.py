"""Breakout (Donchian): buy a close above the highest high of the last `entry` bars, sell a close
below the lowest low of the last `exit` bars."""
from __future__ import annotations

from pydantic import Field

from meshtrader.domain.indicators import RollingExtreme
from meshtrader.strategies.base import Decision, ShortLegParams, Strategy, feature_values, register
from meshtrader.wire.messages import Candle


class BreakoutParams(ShortLegParams):
    entry: int = Field(20, ge=2, description="channel of highs to break for an entry")
    exit: int = Field(10, ge=2, description="channel of lows to break for an exit")


@register
class Breakout(Strategy):
    name = "breakout"
    Params = BreakoutParams
    search_space = {"entry": [10, 20, 40, 60], "exit": [5, 10, 20]}
    price_features = frozenset({"channel_high", "channel_low"})

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        self.highs = RollingExtreme(self.params.entry, highest=True)
        self.lows = RollingExtreme(self.params.exit, highest=False)

    @property
    def warmup(self) -> int:
        return max(self.params.entry, self.params.exit) + 1

    def decide(self, candle: Candle) -> Decision | None:
        high, low = self.highs.value, self.lows.value  # channels of the bars before this one
        self.highs.update(candle.high)
        self.lows.update(candle.low)
        if high is not None and candle.close > high:
            return Decision("buy", 0.6, f"close {candle.close} broke the {self.params.entry}-bar high {high}")
        if low is not None and candle.close < low:
            return Decision(self.bearish, 0.6, f"close {candle.close} broke the {self.params.exit}-bar low {low}")
        return None

    def features(self) -> dict[str, float]:
        """The channels the next close is held against (this bar's high and low included)."""
        if self.highs.value is None or self.lows.value is None:
            return {}
        return feature_values(channel_high=self.highs.value, channel_low=self.lows.value)
