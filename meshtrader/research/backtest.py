"""The event-driven backtester: the very strategy classes the workers run, through the very execution
engine the executor runs (meshtrader.execution.engine) on the paper venue's matching engine, with the
risk guard's rules and risk book (meshtrader.domain.risk), over candles from a store or files.

Bars are processed minute by minute as the mesh sees them: resting orders meet each bar's intrabar
path, every symbol's close marks the books, then each symbol's closed candle goes to each strategy, and
a decision becomes an order exactly as the executor would make it: planned, judged by the risk rules
(whose book the orders mark, so loss halts and drawdown deactivations act as in the mesh), matched and
booked. Money is exact (Decimal) at every fill; the equity curve used for the ratios is kept in floats.
Same input, same output, byte for byte.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from itertools import groupby
from typing import Any

from meshtrader.domain.allocation import equal_weights
from meshtrader.domain.candles import Bar, intrabar_path, merged_timeline, timeframe_ms
from meshtrader.domain.money import cash, to_decimal
from meshtrader.domain.portfolio import Portfolio
from meshtrader.domain.risk import Limits, RiskBook, Verdict, judge, standing_refusal
from meshtrader.execution.engine import ExecutionEngine
from meshtrader.execution.journal import MemoryJournal
from meshtrader.execution.planning import OrderRules
from meshtrader.runtime.log import SilentLogger
from meshtrader.strategies import Strategy, create
from meshtrader.venues.paper import PaperVenue
from meshtrader.wire.messages import Approval, ApproveOrder, Candle, Fill, FundingRate, OrderUpdate, Signal, VenueStatus

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
    liquidity: str


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
    risk_events: list[tuple[int, str, str]] = field(default_factory=list, repr=False)  # (time, rule, what changed)

    def summary(self) -> dict[str, Any]:
        data = asdict(replace(self, equity_curve=[], fills=[]))  # not a deep copy of a bar-by-bar curve to drop
        data.pop("equity_curve")
        data.pop("fills")
        data["risk_events"] = [f"{rule}: {reason}" for _, rule, reason in self.risk_events]
        return data


class Backtester:
    def __init__(self, strategies: dict[str, dict | None], symbols: list[str], settings: Any,
                 tf: str = "1m", weights: dict[str, Decimal] | None = None) -> None:
        """`weights`: each strategy's share of the capital (equal shares if not given)."""
        self.names = list(strategies)
        self.weights = weights or equal_weights(self.names)
        self.symbols = list(symbols)
        self.rules = OrderRules.from_settings(settings)
        self.limits = Limits.from_settings(settings)
        self.order_timeout_s = settings.order_timeout_s
        self.ticks_per_candle = settings.ticks_per_candle
        self.tf_ms = timeframe_ms(tf)
        self.tf = tf
        self.capital = settings.capital
        self.instances: dict[str, list[tuple[str, Strategy]]] = {
            symbol: [(name, create(name, symbol, params)) for name, params in strategies.items()]
            for symbol in self.symbols}

    def run(self, series: dict[str, list[Bar]], funding: dict[str, list[tuple[int, float]]] | None = None) -> Report:
        """Backtest over candles per symbol, with funding settlements (time, rate) per symbol if given."""
        books = _Books(self)
        first_open = min((series[s][0].open_time for s in self.symbols if series[s]), default=0)
        settlements = sorted((t, symbol, rate) for symbol, rates in (funding or {}).items() if symbol in self.instances
                             for t, rate in rates if t >= first_open)
        settlements.append((math.inf, "", 0.0))  # a sentinel: no bounds check per bar
        next_settlement, next_due = 0, settlements[0][0]
        closes, open_qty, curve = books.closes, books.open_qty, books.curve
        tf, tf_ms = self.tf, self.tf_ms
        steps = {symbol: [(name, strategy.decide) for name, strategy in strategies]
                 for symbol, strategies in self.instances.items()}
        funding_hooks = {symbol: [strategy.on_funding for _, strategy in strategies]
                         for symbol, strategies in self.instances.items()}
        execute, working, meet = books.execute, books.engine.working, books.meet
        bars_in_market = 0
        for open_time, minute in self.minutes(series):
            closes_at = open_time + tf_ms
            if working:  # resting orders meet this bar's prices first, as they meet its ticks in the mesh
                meet(minute, open_time)
            for symbol, bar in minute:
                closes[symbol] = bar.close
            for symbol, bar in minute:
                candle = Candle(symbol=symbol, tf=tf, open_time=open_time, open=bar.open, high=bar.high, low=bar.low,
                                close=bar.close, volume=bar.volume, et=closes_at)
                for name, step in steps[symbol]:
                    decision = step(candle)
                    if decision is not None:
                        execute(name, symbol, bar, closes_at, decision.side, decision.stop)
            while next_due <= closes_at:
                _, symbol, rate = settlements[next_settlement]
                next_settlement += 1
                event = FundingRate(symbol=symbol, rate=rate, et=next_due)
                next_due = settlements[next_settlement][0]
                for on_funding in funding_hooks[symbol]:
                    on_funding(event)
            if open_qty:
                equity = books.cash_total
                for (_, symbol), qty in open_qty.items():
                    equity += qty * closes[symbol]
                bars_in_market += 1
                curve.append(equity)
            else:
                curve.append(books.cash_total)
        return books.report(series, bars_in_market)


    def minutes(self, series: dict[str, list[Bar]]) -> Iterator[tuple[int, list[tuple[str, Bar]]]]:
        """Each period's bars across symbols, in event-time order (one symbol needs no merging)."""
        if len(self.symbols) == 1:
            symbol = self.symbols[0]
            return ((bar.open_time, ((symbol, bar),)) for bar in series[symbol])
        timeline = merged_timeline({s: series[s] for s in self.symbols}, {})
        return ((open_time, list(group)) for open_time, group in groupby(timeline, key=_open_time))


def _open_time(item: tuple[str, Bar]) -> int:
    return item[1].open_time


class _Books:
    """One run's exact books (Decimal), kept by the execution engine, and their float shadow for the
    equity curve. It is also the engine's approver (the risk rules on this run's risk book) and the sink
    of its events."""

    def __init__(self, backtester: Backtester) -> None:
        self.bt = backtester
        self.portfolio = Portfolio()
        for name in backtester.names:
            self.portfolio.fund(name, cash(backtester.capital * backtester.weights[name]))
        self.start_equity = float(self.portfolio.equity())
        self.cash_total = self.start_equity
        self.book = RiskBook()
        self.closes: dict[str, float] = {}
        self.open_qty: dict[tuple[str, str], float] = {}  # open positions only
        self.curve: list[float] = []
        self.fills: list[FillRecord] = []
        self.fees = Decimal(0)
        self.rejected = 0
        self.risk_events: list[tuple[int, str, str]] = []
        quiet = SilentLogger("backtest")
        self.engine = ExecutionEngine(self.portfolio, PaperVenue(backtester.rules.fees, backtester.rules.fill_model,
                                                                 quiet),
                                      backtester.rules, self.approve, MemoryJournal(), self, quiet, source="backtest",
                                      order_timeout_s=backtester.order_timeout_s, standing_refusal=self.refusal)

    def execute(self, name: str, symbol: str, bar: Bar, event_time: int, side: str, stop: float | None) -> None:
        """A decision becomes an order exactly as the executor makes it, at every symbol's last price."""
        engine = self.engine
        if side == "sell" and (name, symbol) not in self.open_qty and not engine.working:
            return  # nothing to sell and nothing resting to withdraw: the engine would say so
        marks = self.portfolio.marks
        for s, c in self.closes.items():
            marks[s] = to_decimal(c)
        engine.event_time = event_time
        engine.execute(Signal(signal_id=f"{name}:{symbol}:{bar.open_time}:{side}", strategy=name, symbol=symbol,
                              side=side, confidence=1.0, reason="", price=bar.close, bar_volume=bar.volume,
                              stop=stop or 0.0, et=event_time))

    def meet(self, minute: Iterable[tuple[str, Bar]], open_time: int) -> None:
        """This period's prices, tick by tick along each bar's intrabar path, against the resting orders;
        then the ones past their timeout are canceled."""
        engine, ticks = self.engine, self.bt.ticks_per_candle
        step = self.bt.tf_ms // ticks
        for symbol, bar in minute:
            for n, price in enumerate(intrabar_path(bar, ticks)):
                engine.on_tick(symbol, open_time + n * step, to_decimal(price))
        engine.event_time = open_time + self.bt.tf_ms
        engine.expire()

    # ----- the engine's approver and event sink -------------------------------------------------------
    def approve(self, request: ApproveOrder) -> Approval:
        verdict, changes = judge(self.book, request, self.bt.limits)
        self.note(request.event_time, changes)
        return self.approval(verdict)

    def refusal(self, signal: Signal) -> Approval | None:
        """While the risk book is halted it refuses the signal's order whatever it is: shown the books as
        `approve` would show them (a new day may lift a daily halt), it answers without a full request."""
        if standing_refusal(self.book) is None:
            return None  # not halted: the order is judged in full (which may halt it)
        portfolio = self.portfolio
        self.note(signal.et, self.book.observe(signal.et, portfolio.equity(),
                                               {signal.strategy: portfolio.nav(signal.strategy)}, self.bt.limits))
        verdict = standing_refusal(self.book)
        return None if verdict is None else self.approval(verdict)

    def note(self, event_time: int, changes: list[tuple[str, str]]) -> None:
        """What the risk book changed, as the guard records it: when, by which rule, what."""
        if changes:
            self.risk_events += [(event_time, rule, reason) for rule, reason in changes]

    def approval(self, verdict: Verdict) -> Approval:
        return Approval(approved=verdict.approved, rule=verdict.rule, reason=verdict.reason,
                        trading_state=self.book.trading_state)

    def fill(self, fill: Fill) -> None:
        self.fees += fill.fee
        self.cash_total = float(self.engine.portfolio.cash())
        key = (fill.strategy, fill.symbol)
        if fill.position_after:
            self.open_qty[key] = float(fill.position_after)
        else:
            self.open_qty.pop(key, None)
        self.fills.append(FillRecord(fill.et, fill.strategy, fill.symbol, fill.side, str(fill.qty), str(fill.price),
                                     str(fill.fee), str(fill.realized_pnl), fill.signal_id, fill.liquidity))

    def order(self, update: OrderUpdate) -> None:
        if update.status == "REJECTED":
            self.rejected += 1

    def venue_status(self, status: VenueStatus) -> None:
        pass

    def report(self, series: dict[str, list[Bar]], bars_in_market: int) -> Report:
        for s, c in self.closes.items():
            self.portfolio.mark(s, to_decimal(c))
        final_equity = float(self.portfolio.equity())
        bt, curve = self.bt, self.curve
        return Report(strategies=bt.names, symbols=bt.symbols, bars=sum(len(series[s]) for s in bt.symbols),
                      trades=len(self.fills), roi=round(final_equity / self.start_equity - 1, 8),
                      **ratios(curve, bt.tf_ms), **trade_stats(self.fills),
                      exposure=round(bars_in_market / len(curve), 6) if curve else 0.0, fees=float(self.fees),
                      start_equity=self.start_equity, final_equity=final_equity, rejected=self.rejected,
                      equity_curve=curve, fills=self.fills, risk_events=self.risk_events)


def ratios(curve: list[float], tf_ms: int) -> dict[str, float]:
    """Sharpe and Sortino of per-bar returns, annualised; max drawdown of the curve (a fraction)."""
    if len(curve) < 2:
        return {"sharpe": 0.0, "sortino": 0.0, "max_drawdown": 0.0}
    returns = [b / a - 1 for a, b in zip(curve, curve[1:], strict=False) if a]
    n = len(returns)
    mean = sum(returns) / n
    std = math.sqrt(sum([(r - mean) ** 2 for r in returns]) / n)
    downside = math.sqrt(sum([r ** 2 for r in returns if r < 0.0]) / n)  # gains add nothing
    per_year = math.sqrt(MINUTES_PER_YEAR * 60_000 / tf_ms)
    peak, drawdown = curve[0], 0.0
    for value in curve:
        if value > peak:
            peak = value
        elif (fall := 1 - value / peak) > drawdown:
            drawdown = fall
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


def simulate_allocations(strategies: dict[str, dict | None], scenarios: dict[str, dict[str, Decimal]],
                         series: dict[str, list[Bar]], settings: Any) -> dict[str, dict[str, float]]:
    """The same strategies over the same candles under each allocation scenario: what-if, before moving money."""
    outcome = {}
    for name, weights in scenarios.items():
        report = Backtester(strategies, list(series), settings, settings.timeframe, weights).run(series)
        outcome[name] = {"roi": report.roi, "sharpe": report.sharpe, "sortino": report.sortino,
                         "max_drawdown": report.max_drawdown, "trades": report.trades}
    return outcome
