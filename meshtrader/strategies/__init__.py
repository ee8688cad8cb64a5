"""Strategy registry: name -> class."""
from __future__ import annotations

from meshtrader.strategies.base import Decision, ParameterError, Strategy
from meshtrader.strategies.bench import EveryTick
from meshtrader.strategies.bollinger import Bollinger
from meshtrader.strategies.breakout import Breakout
from meshtrader.strategies.ensemble import Ensemble
from meshtrader.strategies.funding_drift import FundingDrift
from meshtrader.strategies.macd import MacdCross
from meshtrader.strategies.mean_reversion import MeanReversion
from meshtrader.strategies.momentum import Momentum
from meshtrader.strategies.seller_exhaustion import SellerExhaustion
from meshtrader.strategies.sma_cross import SmaCross
from meshtrader.strategies.stochastic import Stochastic

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
