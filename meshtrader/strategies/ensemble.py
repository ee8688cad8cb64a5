"""Ensemble: the weighted vote of member strategies. Each member's decision counts its confidence
times its weight (+ for the bullish buy and cover, - for the bearish sell and short); a net score past
`threshold` (as a share of all weight) becomes the ensemble's decision: buy, or sell (with the short leg
on, futures: short)."""
from __future__ import annotations

from pydantic import Field, field_validator

from meshtrader.strategies.base import Decision, ShortLegParams, Strategy, register
from meshtrader.wire.messages import Candle, FundingRate


class EnsembleParams(ShortLegParams):
    members: dict[str, float] = Field(default_factory=lambda: {"momentum": 1.0, "macd": 1.0, "bollinger": 1.0},
                                      description="member strategies and the weight of each one's vote")
    member_params: dict[str, dict] = Field(default_factory=dict, description="parameters of each member, by name")
    threshold: float = Field(0.3, gt=0, le=1, description="the net vote, as a share of all weight, that decides")

    @field_validator("members")
    @classmethod
    def _members(cls, members: dict[str, float]) -> dict[str, float]:
        if not members or any(w <= 0 for w in members.values()) or "ensemble" in members:
            raise ValueError("give one or more member strategies (not ensemble) with positive weights")
        return members


BULLISH = frozenset({"buy", "cover"})


@register
class Ensemble(Strategy):
    name = "ensemble"
    Params = EnsembleParams
    search_space = {"threshold": [0.2, 0.3, 0.5]}

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        from meshtrader.strategies import create  # the registry imports this module

        self.members = [(create(name, symbol, self.params.member_params.get(name)), weight)
                        for name, weight in self.params.members.items()]
        self.total_weight = sum(w for _, w in self.members)
        self.steps = [(member.decide, weight, member.name) for member, weight in self.members]
        self.price_features = frozenset(f"{member.name}.{name}" for member, _ in self.members
                                        for name in member.price_features)

    @property
    def warmup(self) -> int:
        return max(member.warmup for member, _ in self.members)

    def decide(self, candle: Candle) -> Decision | None:
        decisions = None
        for step, weight, name in self.steps:
            decision = step(candle)
            if decision is not None:
                if decisions is None:
                    decisions = []
                decisions.append((decision, weight, name))
        return None if decisions is None else self.vote(decisions)

    def on_funding(self, funding: FundingRate) -> None:
        for member, _ in self.members:
            member.on_funding(funding)

    def features(self) -> dict[str, float]:
        """The members' features, each named `member.feature`: the inputs of their votes."""
        return {f"{member.name}.{name}": value for member, _ in self.members
                for name, value in member.features().items()}

    def vote(self, decisions: list[tuple[Decision, float, str]]) -> Decision | None:
        """The weighted net score of the members that decided something this bar."""
        score = 0.0
        for decision, weight, _ in decisions:
            score += weight * decision.confidence * (1 if decision.side in BULLISH else -1)
        share = score / self.total_weight
        if abs(share) < self.params.threshold:
            return None
        voters = [f"{name} {decision.side}" for decision, _, name in decisions]
        return Decision("buy" if share > 0 else self.bearish, min(1.0, abs(share)),
                        f"vote {share:+.2f} ({', '.join(voters)})")
