"""The event-driven backtester: the very strategy classes the workers run, through the executor's paper
rules (core.execution) and the risk guard's rules (core.risk), over candles from a store or files.

Bars are processed minute by minute as the mesh sees them: every symbol's close marks the books, then
each symbol's closed candle goes to each strategy, and a decision becomes an order exactly as the
executor would make it. Money is exact (Decimal) at every fill; the equity curve used for the ratios
is kept in floats. Same input, same output, byte for byte.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from core.allocation import equal_weights
from core.execution import PaperRules, approval_request, paper_fee, plan_order
from core.marketdata import Bar, merged_timeline, timeframe_ms
from core.messages import Candle, FundingRate
from core.money import cash, to_decimal
from core.portfolio import Portfolio
from core.risk import Limits, RiskBook, judge
from core.strategies import Strategy, create

MINUTES_PER_YEAR = 525_600


@dataclass(frozen=True)
class FillRecord:
    event_time: int
    strategy: str
    symbol: str
    side: str
    qty: str
    price: str
    fee: str
    realized_pnl: str
    signal_id: str


@dataclass
class Report:
    strategies: list[str]
    symbols: list[str]
    bars: int
    trades: int
    roi: float
    sharpe: float
    sortino: float
    max_drawdown: float
    win_rate: float
    profit_factor: float | None
    exposure: float
    fees: float
    start_equity: float
    final_equity: float
    rejected: int
    equity_curve: list[float] = field(default_factory=list, repr=False)
    fills: list[FillRecord] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("equity_curve")
        data.pop("fills")
        return data


class Backtester:
    def __init__(self, strategies: dict[str, dict | None], symbols: list[str], settings: Any,
                 tf: str = "1m") -> None:
        self.names = list(strategies)
        self.symbols = list(symbols)
        self.rules = PaperRules.from_settings(settings)
        self.limits = Limits.from_settings(settings)
        self.tf_ms = timeframe_ms(tf)
        self.tf = tf
        self.capital = settings.capital
        self.instances: dict[str, list[tuple[str, Strategy]]] = {
            symbol: [(name, create(name, symbol, params)) for name, params in strategies.items()]
            for symbol in self.symbols}

    def run(self, series: dict[str, list[Bar]], funding: dict[str, list[tuple[int, float]]] | None = None) -> Report:
        """Backtest over candles per symbol, with funding settlements (time, rate) per symbol if given."""
        portfolio = Portfolio()
        for name, weight in equal_weights(self.names).items():
            portfolio.fund(name, cash(self.capital * weight))
        start_equity = float(portfolio.equity())
        book = RiskBook()
        closes: dict[str, float] = {}
        cash_f = {name: float(portfolio.accounts[name].cash) for name in self.names}
        held_f: dict[tuple[str, str], float] = {}
        curve: list[float] = []
        fills: list[FillRecord] = []
        bars_in_market = rejected = 0
        fees = Decimal(0)
        minute_bars: list[tuple[str, Bar]] = []
        timeline = merged_timeline({s: series[s] for s in self.symbols}, {})
        first_open = min((series[s][0].open_time for s in self.symbols if series[s]), default=0)
        settlements = sorted((t, symbol, rate) for symbol, rates in (funding or {}).items() if symbol in self.instances
                             for t, rate in rates if t >= first_open)
        next_settlement = 0

        def process_minute() -> None:
            nonlocal bars_in_market, rejected, fees
            for symbol, bar in minute_bars:
                closes[symbol] = bar.close
            for symbol, bar in minute_bars:
                candle = Candle(symbol=symbol, tf=self.tf, open_time=bar.open_time, open=bar.open, high=bar.high,
                                low=bar.low, close=bar.close, volume=bar.volume, et=bar.open_time + self.tf_ms)
                for name, strategy in self.instances[symbol]:
                    decision = strategy.on_candle(candle)
                    if decision is None:
                        continue
                    for s, c in closes.items():  # the executor's marks: every symbol's last price
                        portfolio.mark(s, to_decimal(c))
                    planned = plan_order(portfolio, name, symbol, decision.side, self.rules, bar.volume)
                    if isinstance(planned, str):
                        continue
                    signal_id = f"{name}:{symbol}:{bar.open_time}:{decision.side}"
                    verdict, _ = judge(book, approval_request(portfolio, planned, signal_id, candle.et), self.limits)
                    if not verdict.approved:
                        rejected += 1
                        continue
                    paid = paper_fee(planned, self.rules)
                    realized = portfolio.apply_fill(name, symbol, planned.side, planned.qty, planned.price, paid)
                    fees += paid
                    account = portfolio.accounts[name]
                    cash_f[name] = float(account.cash)
                    held_f[(name, symbol)] = float(account.positions[symbol].qty)
                    fills.append(FillRecord(candle.et, name, symbol, planned.side, str(planned.qty),
                                            str(planned.price), str(paid), str(realized), signal_id))
            nonlocal next_settlement
            closes_at = minute_bars[0][1].open_time + self.tf_ms
            while next_settlement < len(settlements) and settlements[next_settlement][0] <= closes_at:
                settled, symbol, rate = settlements[next_settlement]
                next_settlement += 1
                event = FundingRate(symbol=symbol, rate=rate, et=settled)
                for _, strategy in self.instances[symbol]:
                    strategy.on_funding(event)
            equity = sum(cash_f.values())
            invested = False
            for (_, symbol), qty in held_f.items():
                if qty:
                    equity += qty * closes[symbol]
                    invested = True
            bars_in_market += invested
            curve.append(equity)

        current_minute = None
        for symbol, bar in timeline:
            if bar.open_time != current_minute and minute_bars:
                process_minute()
                minute_bars.clear()
            current_minute = bar.open_time
            minute_bars.append((symbol, bar))
        if minute_bars:
            process_minute()

        for s, c in closes.items():
            portfolio.mark(s, to_decimal(c))
        final_equity = float(portfolio.equity())
        return Report(strategies=self.names, symbols=self.symbols, bars=sum(len(series[s]) for s in self.symbols),
                      trades=len(fills), roi=round(final_equity / start_equity - 1, 8),
                      **ratios(curve, self.tf_ms), **trade_stats(fills),
                      exposure=round(bars_in_market / len(curve), 6) if curve else 0.0, fees=float(fees),
                      start_equity=start_equity, final_equity=final_equity, rejected=rejected,
                      equity_curve=curve, fills=fills)


def ratios(curve: list[float], tf_ms: int) -> dict[str, float]:
    """Sharpe and Sortino of per-bar returns, annualised; max drawdown of the curve (a fraction)."""
    if len(curve) < 2:
        return {"sharpe": 0.0, "sortino": 0.0, "max_drawdown": 0.0}
    returns = [b / a - 1 for a, b in zip(curve, curve[1:], strict=False) if a]
    n = len(returns)
    mean = sum(returns) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in returns) / n)
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / n)
    per_year = math.sqrt(MINUTES_PER_YEAR * 60_000 / tf_ms)
    peak, drawdown = curve[0], 0.0
    for value in curve:
        peak = max(peak, value)
        drawdown = max(drawdown, 1 - value / peak)
    return {"sharpe": round(mean / std * per_year, 6) if std else 0.0,
            "sortino": round(mean / downside * per_year, 6) if downside else 0.0,
            "max_drawdown": round(drawdown, 8)}


def trade_stats(fills: Iterable[FillRecord]) -> dict[str, float | None]:
    """Win rate and profit factor over closing fills (no losing trade: profit factor None)."""
    closes = [Decimal(f.realized_pnl) for f in fills if f.side == "sell"]
    wins = [p for p in closes if p > 0]
    losses = [p for p in closes if p < 0]
    gross_loss = -sum(losses, Decimal(0))
    return {"win_rate": round(len(wins) / len(closes), 6) if closes else 0.0,
            "profit_factor": round(float(sum(wins, Decimal(0)) / gross_loss), 6) if gross_loss else None}
