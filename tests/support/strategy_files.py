"""Strategy files that live outside the package, as a user would write them (tests write them to temp dirs)."""

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
