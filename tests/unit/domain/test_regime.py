"""Market regimes from synthetic markets."""
from __future__ import annotations

import pytest

from meshtrader.wire.messages import Candle


def test_regimes_from_synthetic_markets():
    import math
    import random

    from meshtrader.domain.regime import (
        HIGH_VOL_RANGE,
        LOW_VOL_CONSOLIDATION,
        TRENDING_BEAR,
        TRENDING_BULL,
        RegimeDetector,
        RegimeRules,
    )

    def run(prices: list[float], twin: bool = False):
        detector = RegimeDetector("AAA", "BBB", RegimeRules(window=60, adx_period=14, slope_bars=20))
        reading = None
        for i, price in enumerate(prices):
            for symbol in ("AAA", "BBB") if twin else ("AAA",):
                bar = Candle(symbol=symbol, tf="1m", open_time=i * 60_000, open=price, high=price * 1.0005,
                             low=price * 0.9995, close=price, volume=10.0, et=(i + 1) * 60_000)
                reading = detector.update(bar) or reading
        return reading

    rng = random.Random(7)
    assert run([100 * 1.002 ** i for i in range(300)]).regime == TRENDING_BULL
    assert run([100 * 0.998 ** i for i in range(300)]).regime == TRENDING_BEAR
    assert run([100 + 0.01 * math.sin(i) + rng.gauss(0, 0.01) for i in range(300)]).regime == LOW_VOL_CONSOLIDATION
    choppy = run([100 * (1 + 0.01 * (-1) ** i) + rng.gauss(0, 0.3) for i in range(300)], twin=True)
    assert choppy.regime == HIGH_VOL_RANGE and choppy.correlation == pytest.approx(1.0)
