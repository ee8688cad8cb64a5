"""The strategy contract: a small class per strategy, one instance per symbol, the same in live and backtest.

A strategy sees closed candles (and, if it wants, ticks) and returns a Decision or None. It does not
know about sockets, orders or money: the worker turns decisions into signals, the executor sizes them.
A class decorated with `@register` is known by its `name` to the whole mesh (settings, workers, the
backtester, the optimiser, `mesh backtest`).
"""
from __future__ import annotations

import math
import re
from typing import Any, ClassVar, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from meshtrader.domain.allocation import CASH
from meshtrader.wire.messages import Candle, FundingRate, Tick


class StrategyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ShortLegParams(StrategyParams):
    """Parameters of a strategy with a symmetric short leg (futures only: spot cannot go short)."""

    short: bool = Field(False, description="on a bearish signal go short, not only flat (MESH_MARKET=usdm)")


class FastSlowParams(ShortLegParams):
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

    side: str  # "buy" or "sell"; futures also "short" (enter short) and "cover" (leave it)
    confidence: float
    reason: str
    stop: float | None = None  # an entry's stop price, for strategies that define one (risk per trade)


class Strategy:
    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    search_space: ClassVar[dict[str, list]] = {}  # the values parameter optimisation tries, per parameter
    # Which of features() are prices, so the chart can draw them over the candles. A class's own, except
    # where it depends on the parameters (the ensemble's: its members'), so not a ClassVar.
    price_features: frozenset[str] = frozenset()

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

    @property
    def bearish(self) -> str:
        """A bearish signal's side: leave the long, or with the short leg on, go short (the executor leaves
        the long first). A bullish "buy" likewise covers a short first."""
        return "short" if getattr(self.params, "short", False) else "sell"

    def decide(self, candle: Candle) -> Decision | None:
        """The decision on a closed candle; it also advances the strategy's state (warm-up included)."""
        return None

    def on_tick(self, tick: Tick) -> Decision | None:
        return None

    def on_funding(self, funding: FundingRate) -> None:
        """A funding settlement of this symbol (perpetuals), delivered after the candle it falls in.
        It informs the strategy's state; decisions come from candles (and ticks)."""

    def features(self) -> dict[str, float]:
        """The current inputs of the strategy's decisions, by name, for people to see (the dashboard's
        Features view and chart overlays). Read from the state decide() keeps anyway, and only when
        asked, so the decision path pays nothing for it. Empty before warm-up; a value not known yet is
        left out (see `feature_values`), never NaN."""
        return {}

    @classmethod
    def wants(cls, hook: str) -> bool:
        """Whether the strategy overrides a hook ('decide', 'on_tick', 'on_funding'): workers subscribe to
        candles, ticks and funding only for the hooks a strategy has."""
        return getattr(cls, hook) is not getattr(Strategy, hook)


def feature_values(**values: float | None) -> dict[str, float]:
    """The values that are known and finite, as floats: what features() return (JSON has no NaN)."""
    return {name: float(value) for name, value in values.items() if value is not None and math.isfinite(value)}


REGISTRY: dict[str, type[Strategy]] = {}  # name -> class, in the order they were registered
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,39}")  # a name is part of program names, topics and socket paths
S = TypeVar("S", bound=type[Strategy])


def register(cls: S) -> S:
    """Class decorator: the strategy becomes known by its `name` (`MESH_STRATEGIES`, `mesh backtest --strategy`)."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"@register takes a Strategy subclass, not {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{cls.__module__}.{cls.__qualname__}: give the strategy a `name` of lower-case letters, "
                         f"digits and _ (starting with a letter, at most 40), not {name!r}")
    if name == CASH:
        raise ValueError(f"{cls.__module__}.{cls.__qualname__}: {CASH!r} is the allocation's cash line; name the "
                         "strategy otherwise")
    existing = REGISTRY.get(name)
    # A strategy file may replace one loaded earlier from another file (a moved or edited copy); never a built-in.
    replaceable = existing is not None and existing.__module__.startswith("meshtrader_strategy_file_") \
        and cls.__module__.startswith("meshtrader_strategy_file_")
    if existing is not None and not replaceable and \
            (existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"strategy {name!r} is defined twice: in {existing.__module__} and in {cls.__module__}")
    REGISTRY[name] = cls
    return cls
