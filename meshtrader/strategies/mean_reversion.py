"""Mean reversion: buy when the close is `entry_z` standard deviations below the rolling VWAP, sell
when it is back within `exit_z` of it; with the short leg (futures), the mirror image above the VWAP."""
from __future__ import annotations

from pydantic import Field

from meshtrader.domain.indicators import RollingStats, RollingVWAP
from meshtrader.strategies.base import Decision, ShortLegParams, Strategy, feature_values, register
from meshtrader.wire.messages import Candle


class MeanReversionParams(ShortLegParams):
    period: int = Field(60, ge=5, description="bars of the rolling VWAP and its standard deviation")
    entry_z: float = Field(2.0, gt=0, description="enter this many standard deviations from the VWAP")
    exit_z: float = Field(0.0, ge=0, description="exit once back within this many standard deviations")


@register
class MeanReversion(Strategy):
    name = "mean_reversion"
    Params = MeanReversionParams
    search_space = {"period": [30, 60, 120], "entry_z": [1.5, 2.0, 2.5], "exit_z": [0.0, 0.5]}
    price_features = frozenset({"vwap", "buy_below", "sell_above"})

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        self.vwap = RollingVWAP(self.params.period)
        self.spread = RollingStats(self.params.period)

    @property
    def warmup(self) -> int:
        return 2 * self.params.period

    def decide(self, candle: Candle) -> Decision | None:
        typical = (candle.high + candle.low + candle.close) / 3
        vwap = self.vwap.update(typical, candle.volume)
        if vwap is None:
            return None
        self.spread.update(candle.close - vwap)
        std = self.spread.std
        if not std:
            return None
        z = (candle.close - vwap) / std
        p = self.params
        if z <= -p.entry_z:
            return Decision("buy", min(1.0, -z / 4), f"z-score {z:.2f} vs VWAP {vwap:.2f}")
        if p.short and z >= p.entry_z:
            return Decision("short", min(1.0, z / 4), f"z-score {z:.2f} vs VWAP {vwap:.2f}")
        if z >= -p.exit_z and not (p.short and z > p.exit_z):
            return Decision("sell", 0.5, f"z-score {z:.2f}: back to VWAP {vwap:.2f}")
        if p.short and z <= p.exit_z:
            return Decision("cover", 0.5, f"z-score {z:.2f}: back to VWAP {vwap:.2f}")
        return None

    def features(self) -> dict[str, float]:
        """The last close's z-score against the VWAP, and the entry and exit z-scores as prices."""
        vwap, std = self.vwap.value, self.spread.std
        if vwap is None or not std:
            return {}
        p = self.params
        return feature_values(vwap=vwap, z=self.spread.last / std, buy_below=vwap - p.entry_z * std,
                              sell_above=vwap - p.exit_z * std)
