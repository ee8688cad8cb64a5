"""How a signal becomes an order: sizing, the expected price and slippage, the checks before the risk
guard, and what the risk guard is asked. The execution engine plans this way for every venue, in the
mesh and in a backtest alike: one code path, no "backtest vs dry-run" discrepancy."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

from meshtrader.domain.money import BP, MAKER, TAKER, ZERO, FeeModel, instrument, slipped_price
from meshtrader.domain.portfolio import Portfolio, outlay, size_entry
from meshtrader.wire.messages import ApproveOrder


@dataclass(frozen=True)
class OrderRules:
    order_pct: Decimal
    fees: FeeModel
    slippage_bp: Decimal
    impact_bp: Decimal = ZERO  # volume-aware slippage: + impact_bp x sqrt(order qty / bar volume)
    fill_model: str = "fixed"  # "instant": at the last price; "fixed": slippage_bp (+ the volume impact)
    max_slippage_bp: Decimal = Decimal(50)  # an order expected to slip more is rejected
    order_type: str = "market"  # entries; exits are always market orders (a position must be closable)
    limit_offset_bp: Decimal = Decimal(2)  # a limit buy rests this far under the last price
    sizing: str = "fixed"  # fixed: order_pct of equity; volatility: a target daily move (within order_pct)
    vol_target_pct: Decimal = Decimal("0.005")
    confidence_sizing: bool = False  # an entry's size times its signal's confidence

    @classmethod
    def from_settings(cls, settings: Any) -> OrderRules:
        return cls(settings.order_pct, FeeModel(settings.taker_fee_bp * BP, settings.maker_fee_bp * BP),
                   settings.slippage_bp,
                   settings.slippage_impact_bp, settings.fill_model, settings.max_slippage_bp, settings.order_type,
                   settings.limit_offset_bp, settings.sizing, settings.vol_target_pct, settings.confidence_sizing)

    def entry_share(self, confidence: float, daily_vol: float, leverage: Decimal) -> Decimal:
        """The share of a strategy's equity an entry's margin may use: `order_pct`, or under volatility sizing
        what makes the position's expected daily move `vol_target_pct` of the equity (never more than
        `order_pct`; no volatility known yet: `order_pct`), times the signal's confidence if so set."""
        share = self.order_pct
        if self.sizing == "volatility" and daily_vol > 0:
            share = min(share, self.vol_target_pct / Decimal(repr(round(daily_vol, 8))) / leverage)
        if self.confidence_sizing:
            share *= Decimal(repr(round(min(max(confidence, 0.0), 1.0), 4)))
        return share

    def slippage_for(self, qty: Decimal, bar_volume: float) -> Decimal:
        """Expected slippage of a market order of `qty` in a bar of `bar_volume`, in bp."""
        if self.fill_model == "instant":
            return ZERO
        if not self.impact_bp or bar_volume <= 0:
            return self.slippage_bp
        impact = self.impact_bp * Decimal(repr(round(math.sqrt(float(qty) / bar_volume), 6)))
        return self.slippage_bp + impact


class PlannedOrder(NamedTuple):
    """An order as planned (a tuple: one is planned for every signal, and most are refused)."""

    strategy: str
    symbol: str
    side: str  # the order's: buy or sell
    qty: Decimal
    price: Decimal  # the fill price: last price moved against us by the slippage, on the tick
    opens_position: bool
    liquidity: str = TAKER  # paper orders are market orders
    slippage_bp: Decimal = ZERO  # what the fill model expects this order to slip
    reduces: bool = False  # an exit: it closes (part of) a position


# A signal's side -> (the order's side, whether it is an exit). Shorts and covers trade futures only.
SIGNAL_ORDERS: dict[str, tuple[str, bool]] = {"buy": ("buy", False), "sell": ("sell", True),
                                              "short": ("sell", False), "cover": ("buy", True)}
EXITS = {"sell": "long", "cover": "short"}  # an exit signal -> the position it closes


def plan_order(portfolio: Portfolio, strategy: str, symbol: str, signal_side: str, rules: OrderRules,
               bar_volume: float = 0.0, confidence: float = 1.0, daily_vol: float = 0.0) -> PlannedOrder | str:
    """The order a signal makes at the current marks, or why it makes none. An entry (buy; futures: short
    too) spends its share of the strategy's equity (`OrderRules.entry_share`) within its free cash, as
    margin at the strategy's leverage on futures; an exit (sell a long; cover a short) closes the whole
    position. The price is the mark moved against us by the slippage (plus the volume impact of this
    quantity, if configured). Market orders take liquidity, so they are sized with the taker fee."""
    side, reduces = SIGNAL_ORDERS[signal_side]
    if not portfolio.futures and signal_side in ("short", "cover"):
        return f"a {signal_side} needs futures: spot cannot go short (MESH_MARKET=usdm)"
    account = portfolio.accounts[strategy]
    position = account.positions.get(symbol)
    held = position.qty if position else ZERO
    if reduces and not (held > 0 if signal_side == "sell" else held < 0):
        return f"no {EXITS[signal_side]} position to {signal_side}" if portfolio.futures else "no position to sell"
    if not reduces and held and (held > 0) != (side == "buy"):
        return f"holds a {'long' if held > 0 else 'short'} position: it must be closed before a {signal_side}"
    spec = instrument(symbol)
    mark = portfolio.marks[symbol]
    share = ZERO if reduces else rules.entry_share(confidence, daily_vol, account.leverage)
    if not reduces and rules.order_type == "limit":
        return plan_limit_entry(portfolio, strategy, symbol, side, mark, rules, share)
    slippage = rules.slippage_for(ZERO, 0.0)
    price = slipped_price(side, mark, slippage, spec)
    if not reduces:
        qty, why_not = size_entry(account, portfolio.equity(strategy), price, share, rules.fees.taker, spec,
                                  portfolio.futures)
        if not qty:
            return why_not
    else:  # whole lots only: after a fee taken in the asset bought, the dust under one step stays
        qty = spec.floor_qty(abs(held))
        if qty < spec.min_qty:
            return f"position of {held} {symbol} is under the minimum order size {spec.min_qty}"
    if rules.impact_bp and rules.fill_model != "instant":
        slippage = rules.slippage_for(qty, bar_volume)
        price = slipped_price(side, mark, slippage, spec)
        while not reduces and qty > 0 and outlay(account, qty, price, rules.fees.taker, portfolio.futures) > \
                account.free_cash:
            qty -= spec.qty_step
        if qty < spec.min_qty:
            return f"order too small after the volume impact: {qty} {symbol}"
    return PlannedOrder(strategy, symbol, side, qty, price, opens_position=not reduces and not held,
                        slippage_bp=slippage, reduces=reduces)


def plan_limit_entry(portfolio: Portfolio, strategy: str, symbol: str, side: str, mark: Decimal,
                     rules: OrderRules, share: Decimal) -> PlannedOrder | str:
    """An entry resting `limit_offset_bp` from the last price on its own side (a buy under it, a short
    over it, on the tick): it adds liquidity, so it is sized with the maker fee, and it fills only if the
    market trades through it."""
    spec = instrument(symbol)
    account = portfolio.accounts[strategy]
    offset = rules.limit_offset_bp * BP
    price = spec.round_price(mark * (1 - offset if side == "buy" else 1 + offset), "sell" if side == "buy" else "buy")
    qty, why_not = size_entry(account, portfolio.equity(strategy), price, share, rules.fees.maker, spec,
                              portfolio.futures)
    if not qty:
        return why_not
    held = account.positions.get(symbol)
    return PlannedOrder(strategy, symbol, side, qty, price, opens_position=not (held and held.qty),
                        liquidity=MAKER)


def slippage_problem(order: PlannedOrder, rules: OrderRules) -> str | None:
    """Why an order must be refused for its expected slippage, or None. Exits are never refused for it:
    a position must be closable."""
    if not order.reduces and order.slippage_bp > rules.max_slippage_bp:
        return (f"expected slippage {order.slippage_bp:.2f} bp exceeds the {rules.max_slippage_bp} bp tolerance "
                f"({order.qty} {order.symbol})")
    return None


KELLY_MIN_TRADES = 20  # closed trades before a strategy's Kelly fraction is worth anything


def approval_request(portfolio: Portfolio, order: PlannedOrder, request_id: str, event_time: int,
                     stop: float | None = None, close_all: bool = False, **envelope: Any) -> ApproveOrder:
    """What the risk rules need to judge an order, from the books that will carry it. Every order is
    judged on these sums, so each is taken once: the NAV from the strategy's equity, the portfolio's
    equity from its exposure."""
    account = portfolio.accounts[order.strategy]
    held = account.positions.get(order.symbol)
    strategy_equity, exposure = portfolio.equity(order.strategy), portfolio.exposure()
    portfolio_equity = portfolio.equity() if portfolio.futures else portfolio.cash() + exposure
    return ApproveOrder(request_id=request_id, strategy=order.strategy, symbol=order.symbol, side=order.side,
                        qty=order.qty, price=order.price, reduces=order.reduces,
                        opens_position=order.opens_position, strategy_equity=strategy_equity,
                        strategy_nav=portfolio.nav(order.strategy, strategy_equity),
                        strategy_open_positions=account.open_positions(), portfolio_equity=portfolio_equity,
                        portfolio_exposure=exposure, event_time=event_time, leverage=account.leverage,
                        margin_ratio=portfolio.margin_ratio(order.strategy) if portfolio.futures else ZERO,
                        stop_price=Decimal(repr(stop)) if stop else None,
                        position_qty=held.qty if held else ZERO,
                        portfolio_open_positions=portfolio.open_positions(),
                        strategy_kelly=account.kelly_fraction(KELLY_MIN_TRADES), close_all=close_all, **envelope)


class MarkHistory:
    """Recent prices per symbol. An order is sized and priced as of its signal's event time, however
    late the executor gets to it, so the mesh and the backtester agree bar for bar."""

    def __init__(self, depth: int = 256) -> None:
        self.depth = depth
        self._history: dict[str, deque[tuple[int, Decimal]]] = {}

    def record(self, symbol: str, event_time: int, price: Decimal) -> bool:
        """Keep a price; one older than the newest known is ignored. True if it is the newest."""
        history = self._history.get(symbol)
        if history is None:
            history = self._history[symbol] = deque(maxlen=self.depth)
        if history and event_time < history[-1][0]:
            return False
        history.append((event_time, price))
        return True

    def latest(self, symbol: str) -> Decimal | None:
        history = self._history.get(symbol)
        return history[-1][1] if history else None

    def as_of(self, event_time: int, symbol: str, price: Decimal) -> dict[str, Decimal]:
        """Every symbol's last price strictly before `event_time` (a bar closing then shares its
        timestamp with the next bar's first tick), and `price` for `symbol` itself."""
        marks = {}
        for other, history in self._history.items():
            chosen = history[0][1]
            for when, value in reversed(history):
                if when < event_time:
                    chosen = value
                    break
            marks[other] = chosen
        marks[symbol] = price
        return marks
