"""Market regime: trending bull, trending bear, high-volatility range or low-volatility consolidation,
from trend strength (ADX and the slope of a moving average), volatility (standard deviation of bar
returns), the correlation of the two leading symbols and volume against its own average.

Incremental, like the strategies: O(1) per bar, the same on live candles and in a backtest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from meshtrader.domain.indicators import ADX, SMA, RollingCorrelation, RollingStats
from meshtrader.wire.messages import Candle

TRENDING_BULL = "trending_bull"
TRENDING_BEAR = "trending_bear"
HIGH_VOL_RANGE = "high_volatility_range"
LOW_VOL_CONSOLIDATION = "low_volatility_consolidation"
REGIMES = (TRENDING_BULL, TRENDING_BEAR, HIGH_VOL_RANGE, LOW_VOL_CONSOLIDATION)


@dataclass(frozen=True)
class RegimeRules:
    window: int = 240  # bars for volatility, slope, correlation and volume
    adx_period: int = 60
    adx_trend: float = 25.0  # ADX at or above: a trend begins
    adx_trend_exit: float = 20.0  # ... and lasts until ADX falls below this (hysteresis)
    slope_bars: int = 60  # the moving average's change over this many bars gives the direction
    volatility_split: float = 0.0008  # per-bar return std at or above: high volatility
    confirm_bars: int = 5  # a new regime counts once it holds this many readings in a row (no flapping)


@dataclass(frozen=True)
class RegimeReading:
    regime: str
    adx: float
    slope: float
    volatility: float
    correlation: float | None
    volume_ratio: float

    def metrics(self) -> dict[str, float | None]:
        return {"adx": round(self.adx, 3), "slope": round(self.slope, 8), "volatility": round(self.volatility, 8),
                "correlation": None if self.correlation is None else round(self.correlation, 4),
                "volume_ratio": round(self.volume_ratio, 4)}


class RegimeDetector:
    """Fed the closed candles of a leading symbol (and, for correlation, of a second one)."""

    def __init__(self, leader: str, follower: str | None = None, rules: RegimeRules | None = None) -> None:
        self.leader, self.follower = leader, follower
        self.rules = rules or RegimeRules()
        r = self.rules
        self.adx = ADX(r.adx_period)
        self.average = SMA(r.window)
        self.averages: list[float] = []
        self.returns = RollingStats(r.window)
        self.volume = RollingStats(r.window)
        self.correlation = RollingCorrelation(r.window)
        self.last_close: dict[str, float] = {}
        self.pending: dict[str, tuple[int, float]] = {}  # the other symbol's return, until its pair arrives
        self.reading: RegimeReading | None = None
        self.regime: str | None = None  # the confirmed regime
        self._candidate: tuple[str, int] | None = None

    def pair_returns(self, symbol: str, open_time: int, change: float) -> None:
        """Correlation pairs the two symbols' returns of the same bar, whichever arrives first."""
        other = self.follower if symbol == self.leader else self.leader
        waiting = self.pending.pop(other, None)
        if waiting is not None and waiting[0] == open_time:
            leader_change, follower_change = (change, waiting[1]) if symbol == self.leader else (waiting[1], change)
            self.correlation.update(leader_change, follower_change)
        else:
            self.pending[symbol] = (open_time, change)

    def update(self, candle: Candle) -> RegimeReading | None:
        """A new reading after each leader candle, once warmed up; follower candles only feed correlation."""
        previous = self.last_close.get(candle.symbol)
        self.last_close[candle.symbol] = candle.close
        change = math.log(candle.close / previous) if previous else None
        if change is not None and candle.symbol in (self.leader, self.follower):
            self.pair_returns(candle.symbol, candle.open_time, change)
        if candle.symbol != self.leader:
            return None
        adx = self.adx.update(candle.high, candle.low, candle.close)
        average = self.average.update(candle.close)
        if average is not None:
            self.averages.append(average)
            del self.averages[:-self.rules.slope_bars - 1]
        self.volume.update(candle.volume)
        if change is not None:
            self.returns.update(change)
        if adx is None or self.returns.std is None or len(self.averages) <= self.rules.slope_bars:
            return None
        slope = self.averages[-1] / self.averages[0] - 1
        volatility = self.returns.std
        trending_now = self.regime in (TRENDING_BULL, TRENDING_BEAR)
        if adx >= (self.rules.adx_trend_exit if trending_now else self.rules.adx_trend):
            regime = TRENDING_BULL if slope > 0 else TRENDING_BEAR
        else:
            regime = HIGH_VOL_RANGE if volatility >= self.rules.volatility_split else LOW_VOL_CONSOLIDATION
        volume_ratio = candle.volume / self.volume.mean if self.volume.mean else 1.0
        self.reading = RegimeReading(regime, adx, slope, volatility, self.correlation.value, volume_ratio)
        return self.reading

    def confirm(self, reading: RegimeReading) -> bool:
        """Whether this reading switches the confirmed regime (after `confirm_bars` agreeing readings)."""
        if reading.regime == self.regime:
            self._candidate = None
            return False
        count = self._candidate[1] + 1 if self._candidate and self._candidate[0] == reading.regime else 1
        self._candidate = (reading.regime, count)
        if self.regime is not None and count < self.rules.confirm_bars:
            return False
        self.regime, self._candidate = reading.regime, None
        return True
