"""MACD: the MACD line crossing its signal line."""
from __future__ import annotations

from pydantic import Field

from meshtrader.domain.indicators import MACD, Cross
from meshtrader.strategies.base import Decision, FastSlowParams, Strategy, feature_values, register
from meshtrader.wire.messages import Candle


class MacdParams(FastSlowParams):
    fast: int = Field(12, ge=1, description="bars of the fast EMA")
    slow: int = Field(26, ge=2, description="bars of the slow EMA")
    signal: int = Field(9, ge=1, description="bars of the signal line (an EMA of the MACD line)")


@register
class MacdCross(Strategy):
    name = "macd"
    Params = MacdParams
    search_space = {"fast": [8, 12, 16], "slow": [21, 26, 34], "signal": [5, 9, 12]}

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, params)
        self.macd, self.cross = MACD(self.params.fast, self.params.slow, self.params.signal), Cross()

    @property
    def warmup(self) -> int:
        return self.params.slow + self.params.signal + 1

    def decide(self, candle: Candle) -> Decision | None:
        self.macd.update(candle.close)
        crossed = self.cross.update(self.macd.line, self.macd.signal)
        if crossed > 0:
            return Decision("buy", 0.6, f"MACD {self.macd.line:.4f} crossed above signal {self.macd.signal:.4f}")
        if crossed < 0:
            return Decision(self.bearish, 0.6, f"MACD {self.macd.line:.4f} crossed below signal {self.macd.signal:.4f}")
        return None

    def features(self) -> dict[str, float]:
        line, signal = self.macd.line, self.macd.signal
        if line is None or signal is None:
            return {}
        return feature_values(macd=line, signal=signal, histogram=line - signal)
