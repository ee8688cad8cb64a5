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
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from itertools import groupby
from typing import Any

from meshtrader.domain.allocation import equal_weights, split_cash
from meshtrader.domain.candles import Bar, intrabar_path, merged_timeline, timeframe_ms
from meshtrader.domain.futures import FUNDING_INTERVAL_MS
from meshtrader.domain.indicators import RealisedVolatility
from meshtrader.domain.money import BP, LIQUIDATION, cash, to_decimal
from meshtrader.domain.portfolio import Portfolio
from meshtrader.domain.risk import Limits, RiskBook, Verdict, judge, standing_refusal
from meshtrader.execution.engine import ExecutionEngine
from meshtrader.execution.journal import MemoryJournal
from meshtrader.execution.planning import EXITS, OrderRules
from meshtrader.research.metrics import bar_ratios, daily_ratios, day_end_values, max_drawdown
from meshtrader.runtime.log import SilentLogger
from meshtrader.strategies import Decision, Strategy, create
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
    closing: bool = False  # it closed (part of) a position: a trade's outcome


@dataclass
class Report:
    strategies: list[str]
    symbols: list[str]
    bars: int
    trades: int
    roi: float
    sharpe: float | None  # of daily returns, annualised (research.metrics): None under 2 days or without spread
    sortino: float | None
    max_drawdown: float
    win_rate: float
    profit_factor: float | None
    exposure: float
    fees: float
    start_equity: float
    final_equity: float
    rejected: int
    days: int = 0  # the daily returns the Sharpe and Sortino rest on
    bar_sharpe: float = 0.0  # per-bar Sharpe, not annualised: defined on any window, what the allocator ranks by
    bar_sortino: float = 0.0
    market: str = "spot"
    funding_paid: float = 0.0  # funding settlements a position paid (usdm), a positive amount
    funding_received: float = 0.0
    liquidations: int = 0
    funding_assumed: list[str] = field(default_factory=list)  # settlements with no rate in the data, and what was assumed
    funding: list[tuple[int, str, str, str]] = field(default_factory=list, repr=False)  # (time, strategy, symbol, amount)
    equity_curve: list[float] = field(default_factory=list, repr=False)
    fills: list[FillRecord] = field(default_factory=list, repr=False)
    risk_events: list[tuple[int, str, str]] = field(default_factory=list, repr=False)  # (time, rule, what changed)

    def summary(self) -> dict[str, Any]:
        data = asdict(replace(self, equity_curve=[], fills=[], funding=[]))  # no deep copy of what is dropped
        data.pop("equity_curve")
        data.pop("fills")
        data.pop("funding")
        data["risk_events"] = [f"{rule}: {reason}" for _, rule, reason in self.risk_events]
        return data


class Backtester:
    def __init__(self, strategies: dict[str, dict | None], symbols: list[str], settings: Any,
                 tf: str = "1m", weights: dict[str, Decimal] | None = None, funding_gaps: str = "error") -> None:
        """`weights`: each strategy's share of the capital (equal shares if not given); `funding_gaps`
        (futures): a settlement without a rate is an error, or ("carry") gets the last known rate, said so
        in the report's `funding_assumed`."""
        self.funding_gaps = funding_gaps
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
        self.market = settings.market
        self.leverage = {name: settings.leverage_of(name) for name in self.names}
        self.liquidation_fee_rate = settings.liquidation_fee_bp * BP
        self.vol_lookback = settings.vol_lookback if self.rules.sizing == "volatility" else 0
        self.instances: dict[str, list[tuple[str, Strategy]]] = {
            symbol: [(name, create(name, symbol, params)) for name, params in strategies.items()]
            for symbol in self.symbols}

    def run(self, series: dict[str, list[Bar]], funding: dict[str, list[tuple[int, float]]] | None = None) -> Report:
        """Backtest over candles per symbol, with funding settlements (time, rate) per symbol if given. On
        futures every settlement is paid or received by the open positions, so the rates must cover the
        candles: a missing one is an error (FundingGap), never a silent zero."""
        books = _Books(self)
        first_open = min((series[s][0].open_time for s in self.symbols if series[s]), default=0)
        assumed: list[str] = []
        if self.market == "usdm" and (missing := missing_settlements(series, funding or {}, self.tf_ms)):
            if self.funding_gaps == "error":
                symbol, due = missing[0]
                raise FundingGap(f"{symbol}: no funding rate for the settlement at {_utc(due)} ({len(missing)} "
                                 "missing in all); a futures backtest books every settlement, so it needs them: add "
                                 "the funding file that covers the candles, or carry the last rate forward "
                                 "(--funding-gaps carry) as a stated assumption")
            funding = carried_rates(funding or {}, missing)
            assumed = [f"{symbol} {_utc(due)}: last known rate carried forward" for symbol, due in missing]
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
        execute, working, watched, meet = books.execute, books.engine.working, books.engine.watched, books.meet
        futures, settle = self.market == "usdm", books.settle
        volatility = books.volatility
        bars_in_market = 0
        paid, next_paid = 0, next_due  # futures: settlements paid (before the orders of the bar closing then)
        for open_time, minute in self.minutes(series):
            closes_at = open_time + tf_ms
            if working or watched:  # resting orders and margin levels meet this bar's prices first, as its ticks
                meet(minute, open_time)
            for symbol, bar in minute:
                closes[symbol] = bar.close
                if volatility:
                    volatility[symbol].update(bar.close)
            while futures and next_paid <= closes_at:  # owed by the positions held up to the settlement
                _, symbol, rate = settlements[paid]
                settle(symbol, rate, next_paid)
                paid += 1
                next_paid = settlements[paid][0]
            for symbol, bar in minute:
                candle = Candle(symbol=symbol, tf=tf, open_time=open_time, open=bar.open, high=bar.high, low=bar.low,
                                close=bar.close, volume=bar.volume, et=closes_at)
                for name, step in steps[symbol]:
                    decision = step(candle)
                    if decision is not None:
                        execute(name, symbol, bar, closes_at, decision)
            while next_due <= closes_at:
                _, symbol, rate = settlements[next_settlement]
                next_settlement += 1
                event = FundingRate(symbol=symbol, rate=rate, et=next_due)
                next_due = settlements[next_settlement][0]
                for on_funding in funding_hooks[symbol]:
                    on_funding(event)
            if open_qty:
                equity = books.cash_total - books.cost_total
                for (_, symbol), qty in open_qty.items():
                    equity += qty * closes[symbol]
                bars_in_market += 1
                curve.append(equity)
            else:
                curve.append(books.cash_total)
        report = books.report(series, bars_in_market, first_open)
        report.funding_assumed = assumed
        return report


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
        self.portfolio = Portfolio(backtester.market, backtester.leverage, backtester.liquidation_fee_rate)
        for name in backtester.names:
            self.portfolio.fund(name, cash(backtester.capital * backtester.weights[name]))
        self.start_equity = float(self.portfolio.equity())
        self.cash_total = self.start_equity
        self.book = RiskBook()
        self.closes: dict[str, float] = {}
        self.open_qty: dict[tuple[str, str], float] = {}  # open positions only (futures: signed)
        self.open_cost: dict[tuple[str, str], float] = {}  # futures: their signed entry notional
        self.cost_total = 0.0  # futures: the sum of those, so equity = wallet + qty x close - cost
        self.funding_paid = self.funding_received = Decimal(0)
        self.funding: list[tuple[int, str, str, str]] = []
        self.liquidations = 0
        self.volatility = {s: RealisedVolatility(backtester.vol_lookback, backtester.tf_ms)
                           for s in backtester.symbols} if backtester.vol_lookback else {}
        self.curve: list[float] = []
        self.fills: list[FillRecord] = []
        self.fees = Decimal(0)
        self.rejected = 0
        self.risk_events: list[tuple[int, str, str]] = []
        quiet = SilentLogger("backtest")
        self.engine = ExecutionEngine(self.portfolio, PaperVenue(backtester.rules.fees, backtester.rules.fill_model,
                                                                 quiet),
                                      backtester.rules, self.approve, MemoryJournal(), self, quiet, source="backtest",
                                      order_timeout_s=backtester.order_timeout_s, standing_refusal=self.refusal,
                                      margin_levels=(self.bt.limits.margin_reduce_ratio,
                                                     self.bt.limits.margin_close_ratio))

    def execute(self, name: str, symbol: str, bar: Bar, event_time: int, decision: Decision) -> None:
        """A decision becomes an order exactly as the executor makes it, at every symbol's last price."""
        engine, side = self.engine, decision.side
        if side in EXITS and (name, symbol) not in self.open_qty and not engine.working:
            return  # nothing to close and nothing resting to withdraw: the engine would say so
        marks = self.portfolio.marks
        for s, c in self.closes.items():
            marks[s] = to_decimal(c)
        engine.event_time = event_time
        engine.execute(Signal(signal_id=f"{name}:{symbol}:{bar.open_time}:{side}", strategy=name, symbol=symbol,
                              side=side, confidence=decision.confidence, reason="", price=bar.close,
                              bar_volume=bar.volume, stop=decision.stop or 0.0,
                              volatility=self.volatility[symbol].value if self.volatility else 0.0, et=event_time))

    def settle(self, symbol: str, rate: float, event_time: int) -> None:
        """A funding settlement on the open futures positions, at the close of the bar it ends."""
        holders = {name: account.positions[symbol].qty for name, account in self.portfolio.accounts.items()
                   if symbol in account.positions}
        for entry in self.engine.settle_funding(symbol, to_decimal(rate), to_decimal(self.closes[symbol]), event_time,
                                                holders):
            self.funding.append((event_time, entry.strategy, symbol, str(entry.amount)))
            if entry.amount < 0:
                self.funding_paid -= entry.amount
            else:
                self.funding_received += entry.amount
        self.cash_total = float(self.portfolio.cash())

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
        before = self.open_qty.get(key, 0.0)
        if fill.position_after:
            self.open_qty[key] = float(fill.position_after)
        else:
            self.open_qty.pop(key, None)
        if self.portfolio.futures:
            position = self.portfolio.accounts[fill.strategy].positions[fill.symbol]
            self.cost_total += float(position.cost) - self.open_cost.get(key, 0.0)
            self.open_cost[key] = float(position.cost)
            self.liquidations += fill.liquidity == LIQUIDATION
        closing = before != 0.0 and (before > 0) != (fill.side == "buy")
        self.fills.append(FillRecord(fill.et, fill.strategy, fill.symbol, fill.side, str(fill.qty), str(fill.price),
                                     str(fill.fee), str(fill.realized_pnl), fill.signal_id, fill.liquidity, closing))

    def order(self, update: OrderUpdate) -> None:
        if update.status == "REJECTED":
            self.rejected += 1

    def venue_status(self, status: VenueStatus) -> None:
        pass

    def margin_call(self, strategy: str, symbol: str, ratio: Decimal) -> None:
        """A futures position crossed a margin level: the risk guard's margin rule, as in the mesh (where the
        executor's account snapshot tells it): reduce only, or close the strategy's positions now."""
        portfolio = self.portfolio
        changes, to_close = self.book.observe_margins({strategy: portfolio.margin_ratio(strategy)}, self.bt.limits)
        self.note(self.engine.event_time, changes)
        if to_close:
            self.engine.close_all("risk guard", f"margin ratio reached {self.bt.limits.margin_close_ratio}",
                                  portfolio.marks, strategy)

    def report(self, series: dict[str, list[Bar]], bars_in_market: int, first_open: int) -> Report:
        for s, c in self.closes.items():
            self.portfolio.mark(s, to_decimal(c))
        final_equity = float(self.portfolio.equity())
        bt, curve = self.bt, self.curve
        return Report(strategies=bt.names, symbols=bt.symbols, bars=sum(len(series[s]) for s in bt.symbols),
                      trades=len(self.fills), roi=round(final_equity / self.start_equity - 1, 8),
                      **ratios(curve, bt.tf_ms, first_open, self.start_equity), **trade_stats(self.fills),
                      exposure=round(bars_in_market / len(curve), 6) if curve else 0.0, fees=float(self.fees),
                      start_equity=self.start_equity, final_equity=final_equity, rejected=self.rejected,
                      market=bt.market, funding_paid=float(self.funding_paid),
                      funding_received=float(self.funding_received), liquidations=self.liquidations,
                      funding=self.funding,
                      equity_curve=curve, fills=self.fills, risk_events=self.risk_events)


class FundingGap(ValueError):
    """Funding rates that do not cover a futures backtest's candles: the settlements in question are named."""


def missing_settlements(series: dict[str, list[Bar]], funding: dict[str, list[tuple[int, float]]],
                        bar_ms: int) -> list[tuple[str, int]]:
    """The settlements within each symbol's candles that have no rate (the funding files list one per 8
    hours, stamped a few ms after the hour), as (symbol, settlement time)."""
    missing = []
    for symbol, bars in series.items():
        if not bars:
            continue
        start, end = bars[0].open_time, bars[-1].open_time + bar_ms
        known = {t // FUNDING_INTERVAL_MS for t, _ in funding.get(symbol, ())}
        due = -(-start // FUNDING_INTERVAL_MS) * FUNDING_INTERVAL_MS
        while due <= end:
            if due // FUNDING_INTERVAL_MS not in known:
                missing.append((symbol, due))
            due += FUNDING_INTERVAL_MS
    return missing


def carried_rates(funding: dict[str, list[tuple[int, float]]],
                  missing: list[tuple[str, int]]) -> dict[str, list[tuple[int, float]]]:
    """The rates with each missing settlement given the symbol's last known rate before it: the stated
    assumption of `funding_gaps="carry"`. A symbol with no rate before the gap has nothing to carry."""
    filled = {symbol: sorted(rates) for symbol, rates in funding.items()}
    for symbol, due in missing:
        before = [rate for t, rate in filled.get(symbol, ()) if t < due]
        if not before:
            raise FundingGap(f"{symbol}: no funding rate at or before {_utc(due)} to carry forward")
        filled[symbol] = sorted([*filled[symbol], (due, before[-1])])
    return filled


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def ratios(curve: list[float], tf_ms: int, first_open_ms: int, start_equity: float) -> dict[str, float | int | None]:
    """Sharpe and Sortino of daily returns (annualised; None under 2 days) with the days they rest on, the
    per-bar ratios the allocator ranks by, and the max drawdown (a fraction): meshtrader.research.metrics.
    `first_open_ms`, the first bar's open time, places the UTC day ends; `start_equity` is the equity before it."""
    return {**daily_ratios(day_end_values(curve, tf_ms, first_open_ms, start_equity)), **bar_ratios(curve),
            "max_drawdown": max_drawdown(curve)}


def trade_stats(fills: Iterable[FillRecord]) -> dict[str, float | None]:
    """Win rate and profit factor over closing fills (no losing trade: profit factor None)."""
    closes = [Decimal(f.realized_pnl) for f in fills if f.closing]
    wins = [p for p in closes if p > 0]
    losses = [p for p in closes if p < 0]
    gross_loss = -sum(losses, Decimal(0))
    return {"win_rate": round(len(wins) / len(closes), 6) if closes else 0.0,
            "profit_factor": round(float(sum(wins, Decimal(0)) / gross_loss), 6) if gross_loss else None}


@dataclass(frozen=True)
class AllocationRun:
    curve: list[float]  # the whole capital's equity bar by bar, the cash line included
    start_equity: float
    final_equity: float
    trades: int


def run_allocation(strategies: dict[str, dict | None], weights: dict[str, Decimal], series: dict[str, list[Bar]],
                   settings: Any, funding: dict[str, list[tuple[int, float]]] | None = None) -> AllocationRun:
    """The strategies trading their shares of the capital over the candles, the allocation's cash line held
    aside (a strategy at 0% has nothing to trade)."""
    invested, held = split_cash(weights)
    trading = {n: params for n, params in strategies.items() if invested.get(n)}
    aside = float(settings.capital * held)
    if not trading:
        return AllocationRun([aside] * len({b.open_time for bars in series.values() for b in bars}), aside, aside, 0)
    report = Backtester(trading, list(series), settings, settings.timeframe,
                        {n: invested[n] for n in trading}).run(series, funding)
    return AllocationRun([value + aside for value in report.equity_curve], report.start_equity + aside,
                         report.final_equity + aside, report.trades)


def simulate_allocations(strategies: dict[str, dict | None], scenarios: dict[str, dict[str, Decimal]],
                         series: dict[str, list[Bar]], settings: Any) -> dict[str, dict[str, float | int | None]]:
    """The same strategies over the same candles under each allocation scenario: what-if, before moving money.
    The figures are the whole capital's, a scenario's cash line included."""
    first_open = min((bars[0].open_time for bars in series.values() if bars), default=0)
    tf_ms = timeframe_ms(settings.timeframe)
    outcome = {}
    for name, weights in scenarios.items():
        run = run_allocation(strategies, weights, series, settings)
        outcome[name] = {"roi": round(run.final_equity / run.start_equity - 1, 8), "trades": run.trades,
                         **ratios(run.curve, tf_ms, first_open, run.start_equity)}
    return outcome
