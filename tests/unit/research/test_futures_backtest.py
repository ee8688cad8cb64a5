"""The backtester on USD-M futures: shorts, leverage, funding as money, liquidation and the margin rule."""
from __future__ import annotations

from decimal import Decimal as D

from meshtrader.domain.candles import Bar
from meshtrader.domain.futures import funding_payment
from meshtrader.domain.money import LIQUIDATION, to_decimal
from meshtrader.marketdata.files import find_candle_file, find_series_file, load_bars, load_funding
from meshtrader.research.backtest import Backtester
from meshtrader.runtime.config import REPO_ROOT, Settings
from meshtrader.strategies import Decision, Strategy, register

MIN = 60_000
T0 = 1_746_406_800_000  # 2025-05-05 01:00 UTC: no funding settlement in the synthetic hours after it


@register
class Scripted(Strategy):
    """Enters on the bar `enter_at` (side `side`), leaves on `leave_at`: a trade the test knows."""

    name = "test_scripted"

    def __init__(self, symbol: str, params: dict | None = None) -> None:
        super().__init__(symbol, None)
        self.script = dict(params or {})
        self.bars = 0

    def decide(self, candle) -> Decision | None:
        self.bars += 1
        if self.bars == self.script.get("enter_at"):
            return Decision(self.script["side"], 1.0, "scripted entry")
        if self.bars == self.script.get("leave_at"):
            return Decision("cover" if self.script["side"] == "short" else "sell", 1.0, "scripted exit")
        return None


def settings(**changes) -> Settings:
    return Settings(market="usdm", strategies=["sma_cross"], capital=D("10000"), **changes)


def backtest(script: dict, bars: list[Bar], funding=None, leverage=1, **changes):
    tester = Backtester({"test_scripted": script}, ["BTCUSDT"], settings(**changes))
    tester.leverage = {"test_scripted": D(leverage)}
    return tester, tester.run({"BTCUSDT": bars}, funding)


def flat_then(prices: list[float], start: int = T0, flat: int = 10) -> list[Bar]:
    closes = [100_000.0] * flat + prices
    return [Bar(start + i * MIN, c, c, c, c, 10.0) for i, c in enumerate(closes)]


def test_a_short_opened_and_closed_reconciles_to_the_digit():
    bars = flat_then([99_000.0] * 5)
    _, report = backtest({"side": "short", "enter_at": 3, "leave_at": 12}, bars, leverage=3)
    entry, exit_ = report.fills
    assert (entry.side, exit_.side, exit_.closing) == ("sell", "buy", True)
    qty = D(entry.qty)
    assert D(exit_.realized_pnl) == qty * (D(entry.price) - D(exit_.price))  # the short gained
    wallet = D("10000") + D(exit_.realized_pnl) - D(entry.fee) - D(exit_.fee)
    assert D(str(report.final_equity)) == wallet


def test_funding_over_the_bundled_month_is_booked_exactly():
    """A short held the whole month (data: BTCUSDT's real candles and 8-hour rates): the ledger's funding
    entries add up to what the data says, settlement by settlement."""
    bars, _ = load_bars(find_candle_file(REPO_ROOT / "data", "BTCUSDT"))
    rates = load_funding(find_series_file(REPO_ROOT / "data", "BTCUSDT", "funding"))
    covered = [b for b in bars if b.open_time < rates[-1][0] // (8 * 3_600_000) * 8 * 3_600_000]
    _, report = backtest({"side": "short", "enter_at": 2}, covered, {"BTCUSDT": rates})
    qty = -D(report.fills[0].qty)
    closes = {b.open_time + MIN: to_decimal(b.close) for b in covered}
    expected = [funding_payment(qty, closes[t // MIN * MIN], to_decimal(r)) for t, r in rates
                if report.fills[0].event_time < t // MIN * MIN <= covered[-1].open_time + MIN]
    booked = [D(amount) for _, _, _, amount in report.funding]
    assert len(booked) == len(expected) > 80
    assert sum(booked, D(0)) == sum(expected, D(0))
    assert D(str(report.funding_received)) - D(str(report.funding_paid)) == sum(booked, D(0))


def test_a_crash_liquidates_a_leveraged_long_at_its_liquidation_price():
    bars = flat_then([100_000.0, 60_000.0, 60_000.0])
    _, report = backtest({"side": "buy", "enter_at": 3}, bars, leverage=5)
    entry, liquidation = report.fills
    assert report.liquidations == 1 and liquidation.liquidity == LIQUIDATION and liquidation.side == "sell"
    assert D("80000") < D(liquidation.price) < D("81000")  # ~ entry x (1 - 1/5) / (1 - 0.4%), not the crash low
    margin = D(entry.qty) * D(entry.price) / 5
    loss = D("10000") - D(str(report.final_equity))
    assert margin < loss <= margin + D(entry.fee)  # an isolated position loses its margin, no more


def test_the_risk_guards_margin_rule_closes_a_sliding_long_before_liquidation():
    slide = [100_000.0 - 400.0 * i for i in range(1, 60)]
    _, report = backtest({"side": "buy", "enter_at": 3}, flat_then(slide), leverage=5)
    assert report.liquidations == 0
    rules = [rule for _, rule, _ in report.risk_events]
    assert "margin_ratio" in rules
    entry, close = report.fills
    assert close.side == "sell" and close.liquidity != LIQUIDATION
    assert D(close.price) > D("80321.3")  # the liquidation price of 5x at 100000
