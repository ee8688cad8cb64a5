"""Seller exhaustion with Fibonacci exits.

Entry: in a downtrend (EMA fast < EMA slow), a bar whose volume z-score >= `vol_z`, whose true-range
z-score >= `tr_z` and whose close sits in the top of its range (close location >= `cloc_min`): sellers
spent, buyers took the close. Exits, checked each bar in this priority: ATR stop > Fibonacci target
(the `fib_target_level` retracement from the entry bar's low up to the last confirmed swing high) >
fixed R:R target > time exit. Each exit can be switched off.

Parameters come as keyword params or from a strategy config.json (param `config`: its path) with the blocks
`seller_params`, `backtest_params`, `risk_management`, `exchange`, `data_feed`; see
strategies/seller_exhaustion.example.json. Credentials in it are placeholders and are ignored: they
come only from the environment.
"""
from __future__ import annotations

import json
from collections import deque
from pathlib import Path

from pydantic import Field

from meshtrader.domain.indicators import EMA, RollingExtreme, RollingStats
from meshtrader.strategies.base import (
    Decision,
    ParameterError,
    Strategy,
    StrategyParams,
    feature_values,
    register,
)
from meshtrader.wire.messages import Candle


class SellerExhaustionParams(StrategyParams):
    ema_fast: int = Field(96, ge=1, description="bars of the fast EMA (downtrend: fast under slow)")
    ema_slow: int = Field(672, ge=2, description="bars of the slow EMA")
    z_window: int = Field(672, ge=10, description="bars for the volume and true-range z-scores")
    vol_z: float = Field(2.0, description="least volume z-score of the entry bar")
    tr_z: float = Field(1.2, description="least true-range z-score of the entry bar")
    cloc_min: float = Field(0.6, ge=0, le=1, description="least close location in the bar's range (1: at the high)")
    atr_window: int = Field(96, ge=2, description="bars of the ATR (the stop's unit)")
    fib_swing_lookback: int = Field(96, ge=1, description="bars searched back for the last swing high")
    fib_swing_lookahead: int = Field(5, ge=1, description="bars after a high that confirm it as a swing high")
    fib_target_level: float = Field(0.618, gt=0, le=1, description="the Fibonacci retracement taken as target")
    use_stop_loss: bool = Field(True, description="exit at the ATR stop")
    atr_stop_mult: float = Field(0.7, gt=0, description="the stop this many ATRs under the entry's close")
    use_fib_exits: bool = Field(True, description="exit at the Fibonacci target")
    use_traditional_tp: bool = Field(False, description="exit at a fixed reward:risk target")
    reward_r: float = Field(2.0, gt=0, description="the fixed target's reward as a multiple of the risk")
    use_time_exit: bool = Field(True, description="exit after max_hold bars")
    max_hold: int = Field(96, ge=1, description="bars held at most (with use_time_exit)")


CONFIG_BLOCKS = ("seller_params", "backtest_params", "risk_management", "exchange", "data_feed")
FIB_LEVELS = (0.236, 0.382, 0.5, 0.618, 0.786)  # the retracements a position's features show


def params_from_config(path: Path | str) -> dict:
    """Strategy parameters from a seller-exhaustion config.json (its seller_params and backtest_params)."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ParameterError(f"seller_exhaustion: cannot read config {path}: {error}") from None
    missing = [block for block in ("seller_params", "backtest_params") if block not in config]
    if missing:
        raise ParameterError(f"seller_exhaustion: config {path} lacks {', '.join(missing)}")
    unknown = [block for block in config if block not in CONFIG_BLOCKS]
    if unknown:
        raise ParameterError(f"seller_exhaustion: config {path} has unknown blocks {unknown}")
    known = set(SellerExhaustionParams.model_fields)
    backtest = {k: v for k, v in config["backtest_params"].items() if k in known}
    return {**config["seller_params"], **backtest}


@register
class SellerExhaustion(Strategy):
    name = "seller_exhaustion"
    Params = SellerExhaustionParams
    search_space = {"vol_z": [1.5, 2.0, 2.5], "tr_z": [1.0, 1.2, 1.5], "cloc_min": [0.5, 0.6, 0.7]}
    price_features = frozenset({"ema_fast", "ema_slow", "swing_high", "entry", "stop", "target", "rr_target",
                                *(f"fib_{level}" for level in FIB_LEVELS)})

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        params = dict(params or {})
        if "config" in params:
            params = {**params_from_config(params.pop("config")), **params}
        super().__init__(symbol, params)
        p = self.params
        self.fast, self.slow = EMA(p.ema_fast), EMA(p.ema_slow)
        self.volume_stats, self.range_stats = RollingStats(p.z_window), RollingStats(p.z_window)
        self.atr = EMA(p.atr_window)
        self.highs: deque[float] = deque(maxlen=p.fib_swing_lookahead + 1)
        self.highest = RollingExtreme(p.fib_swing_lookback + p.fib_swing_lookahead + 1)
        self.swing_high: float | None = None
        self.previous_close: float | None = None
        self.trade: dict | None = None

    @property
    def warmup(self) -> int:
        return max(self.params.ema_slow, self.params.z_window) + 1

    def decide(self, candle: Candle) -> Decision | None:
        p = self.params
        previous = self.previous_close if self.previous_close is not None else candle.open
        self.previous_close = candle.close
        true_range = max(candle.high, previous) - min(candle.low, previous)
        fast, slow = self.fast.update(candle.close), self.slow.update(candle.close)
        self.volume_stats.update(candle.volume)
        self.range_stats.update(true_range)
        atr = self.atr.update(true_range)
        self.track_swing_high(candle.high)
        if self.trade is not None:
            return self.exit(candle)
        if fast is None or slow is None or fast >= slow or atr is None:
            return None
        volume_std, range_std = self.volume_stats.std, self.range_stats.std
        if not volume_std or not range_std:
            return None
        vol_z = (candle.volume - self.volume_stats.mean) / volume_std
        tr_z = (true_range - self.range_stats.mean) / range_std
        spread = candle.high - candle.low
        location = (candle.close - candle.low) / spread if spread else 0.0
        if vol_z < p.vol_z or tr_z < p.tr_z or location < p.cloc_min:
            return None
        stop = candle.close - p.atr_stop_mult * atr
        target = None
        if self.swing_high is not None and self.swing_high > candle.close:
            target = candle.low + (self.swing_high - candle.low) * p.fib_target_level
        self.trade = {"entry": candle.close, "stop": stop, "fib": target, "bars": 0,
                      "rr": candle.close + p.reward_r * (candle.close - stop),
                      "low": candle.low, "swing": self.swing_high}  # the Fibonacci range, for features()
        return Decision("buy", min(1.0, 0.5 + vol_z / 10), f"seller exhaustion: volume z {vol_z:.1f}, "
                        f"range z {tr_z:.1f}, close location {location:.2f}, downtrend",
                        stop if p.use_stop_loss else None)

    def exit(self, candle: Candle) -> Decision | None:
        p, trade = self.params, self.trade
        trade["bars"] += 1
        reason = None
        if p.use_stop_loss and candle.low <= trade["stop"]:
            reason = f"ATR stop {trade['stop']:.2f} hit"
        elif p.use_fib_exits and trade["fib"] is not None and candle.high >= trade["fib"]:
            reason = f"Fibonacci {p.fib_target_level} target {trade['fib']:.2f} reached"
        elif p.use_traditional_tp and candle.high >= trade["rr"]:
            reason = f"{p.reward_r}R target {trade['rr']:.2f} reached"
        elif p.use_time_exit and trade["bars"] >= p.max_hold:
            reason = f"time exit after {trade['bars']} bars"
        if reason is None:
            return None
        self.trade = None
        return Decision("sell", 0.7, reason)

    def features(self) -> dict[str, float]:
        """The trend, the last bar's z-scores and the swing high; while it holds a position, that
        position's levels too (see position_levels)."""
        if self.slow.value is None or self.volume_stats.std is None:
            return {}
        values = feature_values(ema_fast=self.fast.value, ema_slow=self.slow.value, atr=self.atr.value,
                                volume_z=last_z(self.volume_stats), range_z=last_z(self.range_stats),
                                swing_high=self.swing_high)
        if self.trade is not None:
            values.update(self.position_levels(self.trade))
        return values

    def position_levels(self, trade: dict) -> dict[str, float]:
        """Entry, the exits in force (stop, Fibonacci target, R:R target), bars held, and the Fibonacci
        retracements from the entry bar's low up to the swing high the target was taken from."""
        p = self.params
        levels = {"entry": trade["entry"], "bars_held": trade["bars"],
                  "stop": trade["stop"] if p.use_stop_loss else None,
                  "target": trade["fib"] if p.use_fib_exits else None,
                  "rr_target": trade["rr"] if p.use_traditional_tp else None}
        if trade["fib"] is not None:
            low, span = trade["low"], trade["swing"] - trade["low"]
            levels.update({f"fib_{level}": low + span * level for level in FIB_LEVELS})
        return feature_values(**levels)

    def track_swing_high(self, high: float) -> None:
        """A swing high is a bar's high no other bar beats from `lookback` bars before to `lookahead`
        bars after it: it is confirmed `lookahead` bars late, never with future data."""
        self.highs.append(high)
        highest = self.highest.update(high)
        if highest is not None and self.highs[0] >= highest:
            self.swing_high = self.highs[0]


def last_z(stats: RollingStats) -> float | None:
    """The z-score of the newest value of a window; None while the window does not vary."""
    return (stats.last - stats.mean) / stats.std if stats.std else None
