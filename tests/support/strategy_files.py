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
