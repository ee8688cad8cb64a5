"""Funding drift: be long into each funding settlement when longs are not crowded (the last rate at or
below `max_rate`), from `lead` bars before it to `lag` bars after it. Settlements come every
`interval_h` hours; the funding series tells when the next one is."""
from __future__ import annotations

from pydantic import Field

from meshtrader.strategies.base import Decision, Strategy, StrategyParams, feature_values, register
from meshtrader.wire.messages import Candle, FundingRate

HOUR_MS = 3_600_000


class FundingDriftParams(StrategyParams):
    lead: int = Field(60, ge=1, description="bars before the settlement to enter")
    lag: int = Field(30, ge=0, description="bars after the settlement to exit")
    max_rate: float = Field(0.0001, description="no entry when the last funding rate is above this")
    interval_h: int = Field(8, ge=1)
    bar_minutes: int = Field(1, ge=1)


@register
class FundingDrift(Strategy):
    name = "funding_drift"
    Params = FundingDriftParams
    search_space = {"lead": [30, 60, 120], "lag": [0, 30, 60], "max_rate": [0.00005, 0.0001, 0.0002]}

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        self.next_settlement: int | None = None
        self.last_rate: float | None = None
        self.exit_at: int | None = None

    def on_funding(self, funding: FundingRate) -> None:
        self.last_rate = funding.rate
        self.next_settlement = funding.et + self.params.interval_h * HOUR_MS

    def decide(self, candle: Candle) -> Decision | None:
        bar_ms = self.params.bar_minutes * 60_000
        if self.exit_at is not None and candle.et >= self.exit_at:
            self.exit_at = None
            return Decision("sell", 0.6, "funding settlement passed: drift trade over")
        nxt = self.next_settlement
        if self.exit_at is None and nxt is not None and nxt - self.params.lead * bar_ms <= candle.et < nxt \
                and self.last_rate is not None and self.last_rate <= self.params.max_rate:
            self.exit_at = nxt + self.params.lag * bar_ms
            return Decision("buy", 0.55, f"settlement in {(nxt - candle.et) // 60_000} min, last funding "
                            f"{self.last_rate:.6f} <= {self.params.max_rate}")
        return None

    def features(self) -> dict[str, float]:
        """The last funding rate and the times (epoch ms) of the next settlement and of a held trade's exit."""
        return feature_values(funding_rate=self.last_rate, next_settlement_ms=self.next_settlement,
                              exit_at_ms=self.exit_at)
