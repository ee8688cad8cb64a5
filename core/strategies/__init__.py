"""Strategy registry: name -> class."""
from __future__ import annotations

from core.strategies.base import Decision, ParameterError, Strategy
from core.strategies.bench import EveryTick
from core.strategies.bollinger import Bollinger
from core.strategies.breakout import Breakout
from core.strategies.ensemble import Ensemble
from core.strategies.funding_drift import FundingDrift
from core.strategies.macd import MacdCross
from core.strategies.mean_reversion import MeanReversion
from core.strategies.momentum import Momentum
from core.strategies.seller_exhaustion import SellerExhaustion
from core.strategies.sma_cross import SmaCross
from core.strategies.stochastic import Stochastic

REGISTRY: dict[str, type[Strategy]] = {cls.name: cls for cls in (
    Momentum, MacdCross, Bollinger, Breakout, MeanReversion, Stochastic, SellerExhaustion, FundingDrift, Ensemble,
    SmaCross, EveryTick)}


def create(name: str, symbol: str, params: dict | None = None) -> Strategy:
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise ParameterError(f"unknown strategy {name!r}; known: {', '.join(REGISTRY)}") from None
    return cls(symbol, params)


__all__ = ["Decision", "ParameterError", "Strategy", "REGISTRY", "create"]
