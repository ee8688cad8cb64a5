"""Funding drift: be long into each funding settlement when longs are not crowded (the last rate at or
below `max_rate`), from `lead` bars before it to `lag` bars after it. Settlements come every
`interval_h` hours; the funding series tells when the next one is. With the short leg (futures), when
longs are crowded (the last rate above `max_rate`, so shorts receive funding) it stands short into the
settlement instead, collecting the funding."""
from __future__ import annotations

from pydantic import Field

from meshtrader.strategies.base import Decision, ShortLegParams, Strategy, feature_values, register
from meshtrader.wire.messages import Candle, FundingRate

HOUR_MS = 3_600_000


class FundingDriftParams(ShortLegParams):
    lead: int = Field(60, ge=1, description="bars before the settlement to enter")
    lag: int = Field(30, ge=0, description="bars after the settlement to exit")
    max_rate: float = Field(0.0001, description="no entry when the last funding rate is above this")
    interval_h: int = Field(8, ge=1, description="hours between funding settlements")
    bar_minutes: int = Field(1, ge=1, description="minutes per bar (lead and lag count bars)")


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
        self.exit_side = "sell"  # how the trade in hand ends: sell a long, cover a short

    def on_funding(self, funding: FundingRate) -> None:
        self.last_rate = funding.rate
        self.next_settlement = funding.et + self.params.interval_h * HOUR_MS

    def decide(self, candle: Candle) -> Decision | None:
        bar_ms = self.params.bar_minutes * 60_000
        if self.exit_at is not None and candle.et >= self.exit_at:
            self.exit_at = None
            return Decision(self.exit_side, 0.6, "funding settlement passed: drift trade over")
        nxt, rate = self.next_settlement, self.last_rate
        if self.exit_at is None and nxt is not None and nxt - self.params.lead * bar_ms <= candle.et < nxt \
                and rate is not None:
            minutes = (nxt - candle.et) // 60_000
            if rate <= self.params.max_rate:
                self.exit_at, self.exit_side = nxt + self.params.lag * bar_ms, "sell"
                return Decision("buy", 0.55, f"settlement in {minutes} min, last funding {rate:.6f} <= "
                                f"{self.params.max_rate}")
            if self.params.short:
                self.exit_at, self.exit_side = nxt + self.params.lag * bar_ms, "cover"
                return Decision("short", 0.55, f"settlement in {minutes} min, last funding {rate:.6f} > "
                                f"{self.params.max_rate}: shorts receive it")
        return None

    def features(self) -> dict[str, float]:
        """The last funding rate and the times (epoch ms) of the next settlement and of a held trade's exit."""
        return feature_values(funding_rate=self.last_rate, next_settlement_ms=self.next_settlement,
                              exit_at_ms=self.exit_at)
