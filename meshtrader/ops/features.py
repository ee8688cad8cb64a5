"""Strategy features for people (the dashboard's Features view and chart overlays): the live values each
strategy worker publishes to hot state, and a strategy's price features replayed over candles.

A worker publishes `features_snapshot` of its instances under `features_key(strategy)`; `live_features`
reads them back. Shapes (prices as numbers, for drawing; times as the chart's, market seconds):
  live_features:  {"strategies": {strategy: {symbol: {"bar_time": open_time_ms, "values": {name: float},
                                                      "prices": [names of values that are prices]}}}}
  chart_overlays: {"strategy", "params", "warmup", "series": {price_feature: [{"time": s, "value": float}]}}
"""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from meshtrader.ops.status import reading
from meshtrader.persistence.hotstate import HotState
from meshtrader.runtime.config import Settings
from meshtrader.strategies import ParameterError, Strategy, create
from meshtrader.wire.messages import Candle


def features_key(strategy: str) -> str:
    """The hot-state key of a strategy's live features."""
    return f"features.{strategy}"


def features_snapshot(instances: Mapping[str, Strategy], bar_times: Mapping[str, int]) -> dict[str, dict]:
    """What a strategy worker publishes: for each symbol it has had a bar of (`bar_times`, open times in
    ms; negative: none yet), that bar's time, its instance's features and which of them are prices."""
    snapshot = {}
    for symbol, instance in instances.items():
        bar_time = bar_times.get(symbol, -1)
        if bar_time >= 0:
            values = instance.features()
            snapshot[symbol] = {"bar_time": bar_time, "values": values,
                                "prices": [name for name in values if name in instance.price_features]}
    return snapshot


def live_features(hot: HotState, settings: Settings) -> dict[str, Any]:
    """Every configured strategy's features as its worker last published them ({} before it has)."""
    return {"strategies": {name: hot.get(features_key(name)) or {} for name in settings.strategies}}


def chart_overlays(settings: Settings, symbol: str, strategy: str, candles: list[Candle]) -> dict[str, Any]:
    """A strategy's price features over `candles`, to draw on their chart. The strategy, with the parameters
    its worker uses, is replayed from the first candle: its lines start once it has warmed up (after about
    `warmup` candles; the caller picks the window, so it can fetch that many more). Unknown strategy:
    ParameterError."""
    return replayed(strategy_in_use(settings, strategy, symbol), strategy, candles)


def replayed(instance: Strategy, strategy: str, candles: list[Candle]) -> dict[str, Any]:
    """A fresh instance fed `candles`, its price features read after each: what it saw at every bar."""
    series: dict[str, list[dict[str, float]]] = {name: [] for name in sorted(instance.price_features)}
    for candle in candles:
        instance.decide(candle)
        time = candle.open_time // 1000
        for name, value in instance.features().items():
            if name in series:
                series[name].append({"time": time, "value": value})
    return {"strategy": strategy, "params": instance.params.model_dump(mode="json"), "warmup": instance.warmup,
            "series": series}


def strategy_in_use(settings: Settings, strategy: str, symbol: str) -> Strategy:
    """A fresh instance with the parameters the strategy's worker runs with: those the allocator adopted
    (kept in the store) unless they are invalid, else the configured ones, as the worker chooses."""
    with reading(settings) as store:
        adopted = store.get_state(f"params.{strategy}") if store is not None else None
    if adopted is not None:
        with suppress(ParameterError):
            return create(strategy, symbol, adopted)
    return create(strategy, symbol, settings.strategy_params.get(strategy))


def strategy_overlays(settings: Settings, symbol: str, strategy: str, n: int) -> dict[str, Any]:
    """`chart_overlays` over a symbol's latest `n` stored candles, warmed up on the ones before them, so the
    lines start at the chart's first candle."""
    instance = strategy_in_use(settings, strategy, symbol)
    with reading(settings) as store:
        candles = store.recent_candles(symbol, n + instance.warmup, settings.timeframe) if store else []
    overlays = replayed(instance, strategy, candles)
    first = candles[max(0, len(candles) - n)].open_time // 1000 if candles else 0
    overlays["series"] = {name: [p for p in points if p["time"] >= first] for name, points in overlays["series"].items()}
    return overlays
