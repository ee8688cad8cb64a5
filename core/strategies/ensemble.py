"""Ensemble: the weighted vote of member strategies. Each member's decision counts its confidence
times its weight (+ for buy, - for sell); a net score past `threshold` (as a share of all weight)
becomes the ensemble's decision."""
from __future__ import annotations

from pydantic import Field, field_validator

from core.messages import Candle, FundingRate
from core.strategies.base import Decision, Strategy, StrategyParams


class EnsembleParams(StrategyParams):
    members: dict[str, float] = Field(default_factory=lambda: {"momentum": 1.0, "macd": 1.0, "bollinger": 1.0})
    member_params: dict[str, dict] = Field(default_factory=dict)
    threshold: float = Field(0.3, gt=0, le=1)

    @field_validator("members")
    @classmethod
    def _members(cls, members: dict[str, float]) -> dict[str, float]:
        if not members or any(w <= 0 for w in members.values()) or "ensemble" in members:
            raise ValueError("give one or more member strategies (not ensemble) with positive weights")
        return members


class Ensemble(Strategy):
    name = "ensemble"
    Params = EnsembleParams

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        from core.strategies import create  # the registry imports this module

        self.members = [(create(name, symbol, self.params.member_params.get(name)), weight)
                        for name, weight in self.params.members.items()]
        self.total_weight = sum(w for _, w in self.members)

    @property
    def warmup(self) -> int:
        return max(member.warmup for member, _ in self.members)

    def decide(self, candle: Candle) -> Decision | None:
        return self.vote([(member.on_candle(candle), weight, member.name) for member, weight in self.members])

    def on_funding(self, funding: FundingRate) -> None:
        for member, _ in self.members:
            member.on_funding(funding)

    def vote(self, decisions: list[tuple[Decision | None, float, str]]) -> Decision | None:
        score, voters = 0.0, []
        for decision, weight, name in decisions:
            if decision is not None:
                score += weight * decision.confidence * (1 if decision.side == "buy" else -1)
                voters.append(f"{name} {decision.side}")
        share = score / self.total_weight
        if abs(share) < self.params.threshold:
            return None
        return Decision("buy" if share > 0 else "sell", min(1.0, abs(share)),
                        f"vote {share:+.2f} ({', '.join(voters)})")
