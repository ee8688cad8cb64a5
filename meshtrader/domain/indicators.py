"""Incremental indicators: O(1) work per update, value None until warmed up."""
from __future__ import annotations

import math
from collections import deque


class SMA:
    """Mean of the last `period` values, as the difference of two running totals: the same float
    operations as numpy's cumsum, so the vectorized sweep finds exactly the event path's crosses."""

    __slots__ = ("period", "_totals", "value")

    def __init__(self, period: int) -> None:
        self.period = period
        self._totals: deque[float] = deque([0.0], maxlen=period + 1)
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        totals = self._totals
        total = totals[-1] + x
        totals.append(total)
        if self.value is not None or len(totals) > self.period:
            self.value = (total - totals[0]) / self.period
        return self.value


class EMA:
    """Seeded with the SMA of the first `period` values, then the usual 2/(n+1) smoothing."""

    __slots__ = ("period", "alpha", "_seed", "value")

    def __init__(self, period: int) -> None:
        self.period = period
        self.alpha = 2.0 / (period + 1)
        self._seed = SMA(period)
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        if self.value is None:
            self.value = self._seed.update(x)
        else:
            self.value += self.alpha * (x - self.value)
        return self.value


class RSI:
    """Wilder's RSI."""

    __slots__ = ("period", "_previous", "_gains", "_losses", "_count", "value")

    def __init__(self, period: int = 14) -> None:
        self.period = period
        self._previous: float | None = None
        self._gains = 0.0
        self._losses = 0.0
        self._count = 0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        previous, self._previous = self._previous, x
        if previous is None:
            return None
        change = x - previous
        gain, loss = (change, 0.0) if change > 0.0 else (0.0, -change)
        period = self.period
        if self.value is not None:  # warmed up: Wilder's smoothing
            gains = self._gains = (self._gains * (period - 1) + gain) / period
            losses = self._losses = (self._losses * (period - 1) + loss) / period
        else:
            self._gains += gain
            self._losses += loss
            self._count += 1
            if self._count < period:
                return None
            gains = self._gains = self._gains / period
            losses = self._losses = self._losses / period
        self.value = 100.0 if losses == 0 else 100.0 - 100.0 / (1.0 + gains / losses)
        return self.value


class MACD:
    """MACD line (fast EMA - slow EMA), its signal EMA, and the histogram."""

    __slots__ = ("_fast", "_slow", "_signal", "line", "signal")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        self._fast, self._slow, self._signal = EMA(fast), EMA(slow), EMA(signal)
        self.line: float | None = None
        self.signal: float | None = None

    def update(self, x: float) -> float | None:
        fast, slow = self._fast.update(x), self._slow.update(x)
        if fast is None or slow is None:
            return None
        self.line = fast - slow
        self.signal = self._signal.update(self.line)
        return None if self.signal is None else self.line - self.signal


class Cross:
    """Tells when series a crosses above (+1) or below (-1) series b between two updates."""

    __slots__ = ("_previous",)

    def __init__(self) -> None:
        self._previous: float | None = None

    @property
    def diff(self) -> float | None:
        """a - b at the last update with both (None before)."""
        return self._previous

    def update(self, a: float | None, b: float | None) -> int:
        if a is None or b is None:
            return 0
        diff, previous = a - b, self._previous
        self._previous = diff
        if previous is None:
            return 0
        if previous <= 0 < diff:
            return 1
        if previous >= 0 > diff:
            return -1
        return 0


class RollingStats:
    """Mean and population standard deviation over the last `period` values (running sums)."""

    __slots__ = ("period", "_window", "_sum", "_sumsq", "mean", "std")

    def __init__(self, period: int) -> None:
        self.period = period
        self._window: deque[float] = deque()
        self._sum = 0.0
        self._sumsq = 0.0
        self.mean: float | None = None
        self.std: float | None = None

    @property
    def last(self) -> float | None:
        """The latest value taken in (None before any)."""
        return self._window[-1] if self._window else None

    def update(self, x: float) -> float | None:
        window, period = self._window, self.period
        window.append(x)
        if self.mean is not None:  # full: one value in, the oldest out
            old = window.popleft()
            total = self._sum - old + x
            squares = self._sumsq - old * old + x * x
        else:
            total = self._sum + x
            squares = self._sumsq + x * x
            if len(window) < period:
                self._sum, self._sumsq = total, squares
                return None
        self._sum, self._sumsq = total, squares
        mean = self.mean = total / period
        variance = squares / period - mean * mean
        self.std = math.sqrt(variance) if variance > 0.0 else 0.0
        return mean


class RollingExtreme:
    """Highest (or lowest) of the last `period` values: a monotonic deque, amortised O(1)."""

    __slots__ = ("period", "highest", "_items", "_count", "value")

    def __init__(self, period: int, highest: bool = True) -> None:
        self.period = period
        self.highest = highest
        self._items: deque[tuple[int, float]] = deque()
        self._count = 0
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        items = self._items
        if self.highest:
            while items and items[-1][1] <= x:
                items.pop()
        else:
            while items and items[-1][1] >= x:
                items.pop()
        items.append((self._count, x))
        if items[0][0] <= self._count - self.period:
            items.popleft()
        self._count += 1
        self.value = items[0][1] if self._count >= self.period else None
        return self.value


class RollingVWAP:
    """Volume-weighted average of the typical price over the last `period` bars."""

    __slots__ = ("period", "_window", "_pv", "_v", "value")

    def __init__(self, period: int) -> None:
        self.period = period
        self._window: deque[tuple[float, float]] = deque()
        self._pv = 0.0
        self._v = 0.0
        self.value: float | None = None

    def update(self, price: float, volume: float) -> float | None:
        window = self._window
        window.append((price, volume))
        if self.value is not None:  # full: one bar in, the oldest out
            old_price, old_volume = window.popleft()
            pv = self._pv = self._pv - old_price * old_volume + price * volume
            v = self._v = self._v - old_volume + volume
        else:
            pv = self._pv = self._pv + price * volume
            v = self._v = self._v + volume
            if len(window) < self.period:
                return None
        self.value = pv / v if v > 0 else price
        return self.value


class ADX:
    """Wilder's average directional index: trend strength (0-100), whatever its direction."""

    def __init__(self, period: int = 14) -> None:
        self.period = period
        self._previous: tuple[float, float, float] | None = None  # high, low, close
        self._tr = self._plus = self._minus = 0.0
        self._count = 0
        self._dx = EMA(period)  # Wilder smoothing of DX, seeded with its mean
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        previous, self._previous = self._previous, (high, low, close)
        if previous is None:
            return None
        prev_high, prev_low, prev_close = previous
        up, down = high - prev_high, prev_low - low
        plus = up if up > down and up > 0 else 0.0
        minus = down if down > up and down > 0 else 0.0
        true_range = max(high, prev_close) - min(low, prev_close)
        n = self.period
        if self._count < n:
            self._tr, self._plus, self._minus = self._tr + true_range, self._plus + plus, self._minus + minus
            self._count += 1
            if self._count < n:
                return None
        else:
            self._tr += true_range - self._tr / n
            self._plus += plus - self._plus / n
            self._minus += minus - self._minus / n
        if not self._tr:
            return self.value
        plus_di, minus_di = 100 * self._plus / self._tr, 100 * self._minus / self._tr
        total = plus_di + minus_di
        self.value = self._dx.update(100 * abs(plus_di - minus_di) / total if total else 0.0)
        return self.value


class RollingCorrelation:
    """Pearson correlation of two series over the last `period` pairs (running sums)."""

    def __init__(self, period: int) -> None:
        self.period = period
        self._pairs: deque[tuple[float, float]] = deque(maxlen=period)
        self._sx = self._sy = self._sxx = self._syy = self._sxy = 0.0
        self.value: float | None = None

    def update(self, x: float, y: float) -> float | None:
        if len(self._pairs) == self.period:
            ox, oy = self._pairs[0]
            self._sx -= ox
            self._sy -= oy
            self._sxx -= ox * ox
            self._syy -= oy * oy
            self._sxy -= ox * oy
        self._pairs.append((x, y))
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._syy += y * y
        self._sxy += x * y
        n = len(self._pairs)
        if n == self.period:
            cov = self._sxy / n - self._sx / n * self._sy / n
            var_x = self._sxx / n - (self._sx / n) ** 2
            var_y = self._syy / n - (self._sy / n) ** 2
            self.value = cov / math.sqrt(var_x * var_y) if var_x > 0 and var_y > 0 else 0.0
        return self.value


class RealisedVolatility:
    """The daily volatility of a series of closes: the standard deviation of the last `lookback` log
    returns, scaled by sqrt(bars per day). What volatility-targeted sizing divides by; the strategy
    worker and the backtester keep one per symbol, so both size alike."""

    __slots__ = ("returns", "bars_per_day", "last", "value")

    def __init__(self, lookback: int, bar_ms: int) -> None:
        self.returns: deque[float] = deque(maxlen=lookback)
        self.bars_per_day = 86_400_000 / bar_ms
        self.last: float | None = None
        self.value = 0.0  # 0 until `lookback` returns are known

    def update(self, close: float) -> float:
        if self.last and close > 0:
            self.returns.append(math.log(close / self.last))
            if len(self.returns) == self.returns.maxlen:
                n = len(self.returns)
                mean = sum(self.returns) / n
                self.value = math.sqrt(sum((r - mean) ** 2 for r in self.returns) / (n - 1) * self.bars_per_day)
        self.last = close
        return self.value
