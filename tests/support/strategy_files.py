"""Strategy files that live outside the package, as a user would write them (tests write them to temp dirs)."""
import re

from meshtrader.runtime.config import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def readme_example() -> str:
    """The strategy file of README's "Extending Meshtrader", as it is printed there."""
    return python_block_of("### A strategy is one file")


def python_block_of(heading: str) -> str:
    """The one Python block of a README section (up to the next heading)."""
    section = re.split(r"\n##+ ", README.split(heading, 1)[1], maxsplit=1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


EVERY_BAR = '''
from meshtrader.strategies import Decision, Strategy, register


@register
class EveryBar(Strategy):
    """Buys and sells on alternate closed candles."""

    name = "every_bar"

    def __init__(self, symbol, params=None):
        super().__init__(symbol, params)
        self.count = 0

    def decide(self, candle):
        self.count += 1
        return Decision("buy" if self.count % 2 else "sell", 0.5, f"bar {self.count}")
'''

SCRIPTED = '''
from pydantic import Field

from meshtrader.strategies import Decision, Strategy, StrategyParams, register


class ScriptParams(StrategyParams):
    enter_at_ms: int = Field(description="the candle (open time) to enter on")
    leave_at_ms: int = Field(0, description="the candle to leave on; 0: never")


class Scripted(Strategy):
    """Enters and leaves on candles given by their open time: a trade the test knows in advance."""

    Params = ScriptParams
    entry = "buy"

    def decide(self, candle):
        if candle.open_time == self.params.enter_at_ms:
            return Decision(self.entry, 1.0, "scripted entry")
        if candle.open_time == self.params.leave_at_ms:
            return Decision("cover" if self.entry == "short" else "sell", 1.0, "scripted exit")
        return None


@register
class ScriptedShort(Scripted):
    name = "scripted_short"
    entry = "short"


@register
class ScriptedLong(Scripted):
    name = "scripted_long"
'''

SHORT_EVERY_FEW = '''
from meshtrader.strategies import Decision, Strategy, register


@register
class ShortEveryFew(Strategy):
    """Goes short on every 64th closed candle and covers 32 candles later: with funding every 480 candles
    (480 = 7.5 x 64), every other settlement falls while a short is open, wherever the worker started."""

    name = "short_every_few"

    def __init__(self, symbol, params=None):
        super().__init__(symbol, params)
        self.count = 0

    def decide(self, candle):
        self.count += 1
        if self.count % 64 == 0:
            return Decision("short", 1.0, f"bar {self.count}")
        if self.count % 64 == 32:
            return Decision("cover", 1.0, f"bar {self.count}")
        return None
'''

SHORT_AND_HOLD = '''
from meshtrader.strategies import Decision, Strategy, register


@register
class ShortAndHold(Strategy):
    """Goes short on its second closed candle and holds: the next funding settlement falls on the short."""

    name = "short_and_hold"

    def __init__(self, symbol, params=None):
        super().__init__(symbol, params)
        self.count = 0

    def decide(self, candle):
        self.count += 1
        return Decision("short", 1.0, "hold it") if self.count == 2 else None
'''
