"""The strategy contract: a small class per strategy, one instance per symbol, the same in live and backtest.

A strategy sees closed candles (and, if it wants, ticks) and returns a Decision or None. It does not
know about sockets, orders or money: the worker turns decisions into signals, the executor sizes them.
"""
from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from meshtrader.wire.messages import Candle, FundingRate, Tick


class StrategyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FastSlowParams(StrategyParams):
    """Parameters of a strategy comparing a fast and a slow average; subclasses set the defaults."""

    fast: int = Field(ge=1)
    slow: int = Field(ge=2)

    @model_validator(mode="after")
    def _fast_below_slow(self) -> FastSlowParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be shorter than slow ({self.slow})")
        return self


class ParameterError(ValueError):
    pass


class Decision(NamedTuple):
    """What a strategy wants on this bar (a tuple: strategies make one on many bars, cheaply)."""

    side: str  # "buy" or "sell"
    confidence: float
    reason: str
    stop: float | None = None  # an entry's stop price, for strategies that define one (risk per trade)


class Strategy:
    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    search_space: ClassVar[dict[str, list]] = {}  # the values parameter optimisation tries, per parameter

    def __init__(self, symbol: str, params: dict[str, Any] | None = None) -> None:
        self.symbol = symbol
        try:
            self.params = self.Params(**(params or {}))
        except ValidationError as error:
            problems = "; ".join(
                (f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "") + e["msg"].removeprefix("Value error, ")
                for e in error.errors())
            raise ParameterError(f"{self.name}: invalid parameters: {problems}") from None

    @property
    def warmup(self) -> int:
        """Bars needed before the first decision."""
        return 0

    def decide(self, candle: Candle) -> Decision | None:
        """The decision on a closed candle; it also advances the strategy's state (warm-up included)."""
        return None

    def on_tick(self, tick: Tick) -> Decision | None:
        return None

    def on_funding(self, funding: FundingRate) -> None:
        """A funding settlement of this symbol (perpetuals), delivered after the candle it falls in.
        It informs the strategy's state; decisions come from candles (and ticks)."""

    @classmethod
    def wants(cls, hook: str) -> bool:
        """Whether the strategy overrides a hook ('decide', 'on_tick', 'on_funding'): workers subscribe to
        candles, ticks and funding only for the hooks a strategy has."""
        return getattr(cls, hook) is not getattr(Strategy, hook)
