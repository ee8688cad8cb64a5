"""Per-strategy sub-accounts with exact cash and positions: spot (long only, the asset held) or USD-M
futures (signed positions, isolated margin, funding; see meshtrader.domain.futures).

The same Portfolio is rebuilt from the store's ledger and trades at start-up, kept live by the
executor, and recomputed by tests to reconcile. Spot: cash + positions at the last price = equity.
Futures: `cash` is the wallet balance (transfers + realized PnL - fees + funding), and equity is the
wallet + the positions' unrealized PnL at the last price.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from meshtrader.domain.futures import initial_margin, liquidation_fee, margin_ratio, threshold_price
from meshtrader.domain.money import ZERO, Instrument, cash, fee, instrument
from meshtrader.wire.messages import AccountSnapshot, PositionView, StrategyAccount

NAV_QUANTUM = Decimal("0.0000000001")
TRANSFER, FUNDING = "transfer", "funding"  # the ledger's kinds of entry: capital moved, funding settled


class AccountingError(ValueError):
    pass


@dataclass
class Position:
    qty: Decimal = ZERO  # futures: signed, a short is negative
    cost: Decimal = ZERO  # spot: what the open quantity cost, buy fees included; futures: signed entry notional
    margin: Decimal = ZERO  # futures: the isolated margin the position holds

    @property
    def entry_price(self) -> Decimal:
        return cash(self.cost / self.qty) if self.qty else ZERO


@dataclass
class SubAccount:
    strategy: str
    cash: Decimal = ZERO
    positions: dict[str, Position] = field(default_factory=dict)
    realized_pnl: Decimal = ZERO
    trades: int = 0
    units: Decimal = ZERO  # fund-style units: transfers buy or sell units at NAV, so NAV tracks performance only
    reserved: Decimal = ZERO  # cash promised to resting buy orders: not free to spend or move
    wins: int = 0  # closing fills with a profit, and their total: the edge the Kelly rule reads
    losses: int = 0
    gross_profit: Decimal = ZERO
    gross_loss: Decimal = ZERO
    leverage: Decimal = Decimal(1)  # futures: notional / initial margin of its positions
    funding: Decimal = ZERO  # futures: funding received (+) and paid (-) so far
    margin: Decimal = ZERO  # futures: the isolated margin its positions hold, together

    def open_positions(self) -> int:
        count = 0
        for position in self.positions.values():
            if position.qty:
                count += 1
        return count

    @property
    def free_cash(self) -> Decimal:
        """What new orders may spend: cash not promised to resting orders nor (futures) held as margin."""
        return self.cash - self.reserved - self.margin

    def book_realized(self, realized: Decimal) -> None:
        """A closing fill's realized PnL, and its win or loss (the edge the Kelly rule reads)."""
        self.realized_pnl += realized
        if realized > 0:
            self.wins += 1
            self.gross_profit += realized
        elif realized < 0:
            self.losses += 1
            self.gross_loss -= realized

    def kelly_fraction(self, min_trades: int) -> float | None:
        """p (1 - 1/PF) from the closed trades, once there are enough of them to say anything."""
        closed = self.wins + self.losses
        if closed < min_trades:
            return None
        if not self.gross_loss:
            return 1.0
        if not self.gross_profit:
            return -1.0
        return self.wins / closed * (1 - float(self.gross_loss / self.gross_profit))


class Portfolio:
    def __init__(self, market: str = "spot", leverage: dict[str, Decimal] | None = None,
                 liquidation_fee_rate: Decimal = ZERO) -> None:
        """`market`: spot or usdm; `leverage` per strategy (usdm; 1 where not given)."""
        self.market = market
        self.futures = market == "usdm"
        self.leverage = leverage or {}
        self.liquidation_fee_rate = liquidation_fee_rate
        self.accounts: dict[str, SubAccount] = {}
        self.marks: dict[str, Decimal] = {}

    def books(self) -> dict[str, Any]:
        """What a portfolio rebuilt from the store needs to be kept the same way (`rebuild`'s `books`)."""
        return {"market": self.market, "leverage": self.leverage, "liquidation_fee_rate": self.liquidation_fee_rate}

    def account(self, strategy: str) -> SubAccount:
        found = self.accounts.get(strategy)
        if found is None:
            found = self.accounts[strategy] = SubAccount(strategy, leverage=self.leverage.get(strategy, Decimal(1)))
        return found

    def fund(self, strategy: str, amount: Decimal) -> None:
        """Move cash in (or out, negative) of a sub-account at its current NAV."""
        account = self.account(strategy)
        if account.cash + amount < 0:
            raise AccountingError(f"{strategy}: transfer of {amount} exceeds cash {account.cash}")
        nav = self.nav(strategy)
        account.cash += amount
        account.units += amount / nav

    def nav(self, strategy: str, equity: Decimal | None = None) -> Decimal:
        """Equity per unit (1 at the first funding): a strategy's performance, untouched by transfers.
        `equity`: the strategy's equity at the current marks, if the caller has just valued it."""
        account = self.accounts[strategy]
        if not account.units:
            return Decimal(1)
        return ((self.equity(strategy) if equity is None else equity) / account.units).quantize(NAV_QUANTUM)

    def apply_fill(self, strategy: str, symbol: str, side: str, qty: Decimal, price: Decimal,
                   fee_paid: Decimal) -> Decimal:
        """Book a fill; returns its realized PnL (spot: zero for buys, a sell's net of both fees; futures:
        the price PnL of what it closed, as the exchange reports it, fees apart)."""
        if qty <= 0:
            raise AccountingError(f"fill quantity must be positive, got {qty}")
        account = self.account(strategy)
        position = account.positions.setdefault(symbol, Position())
        if self.futures:
            return self.apply_futures_fill(account, position, qty if side == "buy" else -qty, price, fee_paid)
        notional = qty * price
        account.trades += 1
        if side == "buy":
            outlay = notional + fee_paid
            if outlay > account.cash:
                raise AccountingError(f"{strategy}: buy of {outlay} exceeds cash {account.cash}")
            account.cash -= outlay
            position.qty += qty
            position.cost += outlay
            return ZERO
        if qty > position.qty:
            raise AccountingError(f"{strategy}: sell of {qty} {symbol} exceeds position {position.qty}")
        released = position.cost if qty == position.qty else cash(position.cost * qty / position.qty)
        proceeds = notional - fee_paid
        account.cash += proceeds
        position.qty -= qty
        position.cost -= released
        realized = proceeds - released
        account.book_realized(realized)
        return realized

    def apply_futures_fill(self, account: SubAccount, position: Position, delta: Decimal, price: Decimal,
                           fee_paid: Decimal) -> Decimal:
        """A signed fill on a one-way futures position: it opens or adds (margin set aside at the strategy's
        leverage), or reduces (the released entry cost against the price: realized PnL, margin released pro
        rata), or both when it passes through zero."""
        held = position.qty
        closing = min(abs(delta), abs(held)) if held and (held > 0) != (delta > 0) else ZERO
        realized = ZERO
        if closing:
            whole = closing == abs(held)
            released = position.cost if whole else cash(position.cost * closing / abs(held))
            freed = position.margin if whole else cash(position.margin * closing / abs(held))
            realized = (closing if held > 0 else -closing) * price - released
            position.qty += closing if delta > 0 else -closing
            position.cost -= released
            position.margin -= freed
            account.margin -= freed
            account.cash += realized
            account.book_realized(realized)
        opening = abs(delta) - closing
        if opening:
            notional = opening * price
            needed = initial_margin(notional, account.leverage)
            if not closing and needed + fee_paid > account.free_cash:
                raise AccountingError(f"{account.strategy}: margin {needed} + fee {fee_paid} exceeds the free "
                                      f"balance {account.free_cash}")
            position.qty += opening if delta > 0 else -opening
            position.cost += notional if delta > 0 else -notional
            position.margin += needed
            account.margin += needed
        account.cash -= fee_paid
        account.trades += 1
        return realized

    def credit_funding(self, strategy: str, amount: Decimal) -> None:
        """Funding as the venue booked it (the store's ledger, an exchange's income history)."""
        account = self.account(strategy)
        account.cash += amount
        account.funding += amount

    def liquidation(self, strategy: str, symbol: str, price: Decimal) -> tuple[str, Decimal, Decimal]:
        """The order that liquidates a position at `price` (its liquidation price): (side, qty, fee), the
        fee never more than the margin left there."""
        position = self.accounts[strategy].positions[symbol]
        margin_left = position.margin + position.qty * price - position.cost
        return ("sell" if position.qty > 0 else "buy", abs(position.qty),
                liquidation_fee(position.qty, price, self.liquidation_fee_rate, margin_left))

    def threshold(self, strategy: str, symbol: str, ratio: Decimal, tick: Decimal) -> Decimal | None:
        """The mark at which a futures position's margin ratio reaches `ratio` (1: its liquidation price)."""
        position = self.accounts[strategy].positions.get(symbol)
        if position is None or not position.qty:
            return None
        return threshold_price(symbol, position.qty, position.cost, position.margin, ratio, tick)

    def margin_ratio(self, strategy: str) -> Decimal:
        """The strategy's highest margin ratio over its futures positions at the marks (0: none open)."""
        worst = ZERO
        for symbol, position in self.accounts[strategy].positions.items():
            mark = self.marks.get(symbol)
            if position.qty and mark is not None:
                worst = max(worst, margin_ratio(symbol, position.qty, position.cost, position.margin, mark))
        return worst

    def mark(self, symbol: str, price: Decimal) -> None:
        self.marks[symbol] = price

    # ----- valuation (plain loops: every order is judged on these sums) ---------------------------------
    def exposure(self, strategy: str | None = None) -> Decimal:
        """Open positions' notional at their marks (futures: the absolute notional, longs and shorts); a
        position never marked at cost, rather than invent a price."""
        marks, total = self.marks, ZERO
        for account in (self.accounts[strategy],) if strategy else self.accounts.values():
            for symbol, position in account.positions.items():
                if position.qty:
                    mark = marks.get(symbol)
                    total += abs(position.cost if mark is None else position.qty * mark)
        return total

    def unrealized(self, strategy: str | None = None) -> Decimal:
        """Futures: the open positions' unrealized PnL at their marks (qty x mark - entry notional)."""
        marks, total = self.marks, ZERO
        for account in (self.accounts[strategy],) if strategy else self.accounts.values():
            for symbol, position in account.positions.items():
                if position.qty and (mark := marks.get(symbol)) is not None:
                    total += position.qty * mark - position.cost
        return total

    def equity(self, strategy: str | None = None) -> Decimal:
        """Spot: cash + the positions at their marks. Futures: wallet + unrealized PnL."""
        valued = self.unrealized if self.futures else self.exposure
        if strategy:
            return self.accounts[strategy].cash + valued(strategy)
        return self.cash() + valued()

    def open_positions(self) -> int:
        """Positions open across the sub-accounts."""
        count = 0
        for account in self.accounts.values():
            count += account.open_positions()
        return count

    def cash(self) -> Decimal:
        total = ZERO
        for account in self.accounts.values():
            total += account.cash
        return total

    def held_assets(self, quote: str = "USDT") -> dict[str, Decimal]:
        """Every base asset the sub-accounts hold, summed: what the exchange account must hold too."""
        held: dict[str, Decimal] = {}
        for account in self.accounts.values():
            for symbol, position in account.positions.items():
                asset = symbol.removesuffix(quote)
                held[asset] = held.get(asset, ZERO) + position.qty
        return held

    def trades(self) -> int:
        return sum(a.trades for a in self.accounts.values())

    def snapshot(self) -> AccountSnapshot:
        accounts = []
        for name, account in sorted(self.accounts.items()):
            views = [self.position_view(name, s, p) for s, p in sorted(account.positions.items()) if p.qty]
            accounts.append(StrategyAccount(strategy=name, cash=account.cash, equity=self.equity(name),
                                            nav=self.nav(name), positions=views, margin=account.margin,
                                            margin_ratio=self.margin_ratio(name) if self.futures else ZERO,
                                            funding=account.funding, leverage=account.leverage))
        return AccountSnapshot(equity=self.equity(), cash=self.cash(), exposure=self.exposure(),
                               trades=self.trades(), accounts=accounts, market=self.market)

    def position_view(self, strategy: str, symbol: str, position: Position) -> PositionView:
        last = self.marks.get(symbol, ZERO)
        view = PositionView(symbol=symbol, qty=position.qty, cost=position.cost, avg_price=position.entry_price,
                            last_price=last)
        if self.futures:
            view.margin = position.margin
            view.unrealized_pnl = position.qty * last - position.cost if last else ZERO
            view.liquidation_price = threshold_price(symbol, position.qty, position.cost, position.margin,
                                                     Decimal(1), instrument(symbol).price_tick)
        return view

    # ----- rebuilding ---------------------------------------------------------------------------
    @classmethod
    def rebuild(cls, ledger: Iterable, trades: Iterable, **books: Any) -> Portfolio:
        """From the store's rows, in the order they happened (ledger: strategy, amount, kind, created_at;
        trades: strategy, symbol, side, qty, price, fee, created_at); `books`: the Portfolio's market and
        leverage. Cash and positions come out exact; units (performance) are restored from what the
        executor saved, see `units_state`."""
        portfolio = cls(**books)
        events = sorted([(row["created_at"], 0, i, row) for i, row in enumerate(ledger)] +
                        [(row["created_at"], 1, i, row) for i, row in enumerate(trades)], key=lambda e: e[:3])
        for _, kind, _, row in events:
            if kind == 0 and row["kind"] == FUNDING:
                portfolio.credit_funding(row["strategy"], Decimal(row["amount"]))
            elif kind == 0:
                portfolio.fund(row["strategy"], Decimal(row["amount"]))
            else:
                portfolio.apply_fill(row["strategy"], row["symbol"], row["side"], Decimal(row["qty"]),
                                     Decimal(row["price"]), Decimal(row["fee"]))
        return portfolio

    def units_state(self) -> dict[str, str]:
        return {name: str(account.units) for name, account in self.accounts.items()}

    def restore_units(self, state: dict[str, str] | None) -> None:
        for name, units in (state or {}).items():
            if name in self.accounts:
                self.accounts[name].units = Decimal(units)


def outlay(account: SubAccount, qty: Decimal, price: Decimal, fee_rate: Decimal, futures: bool) -> Decimal:
    """What an entry takes from free cash: spot, the notional and the fee; futures, the initial margin at the
    strategy's leverage and the fee."""
    notional = qty * price
    return (initial_margin(notional, account.leverage) if futures else notional) + fee(notional, fee_rate)


def size_entry(account: SubAccount, equity: Decimal, price: Decimal, share: Decimal, fee_rate: Decimal,
               spec: Instrument, futures: bool = False) -> tuple[Decimal, str]:
    """Quantity for an entry whose outlay is `share` of the strategy's equity, within its free cash (on
    futures the notional is that margin times the leverage); (0, why) if none."""
    free_cash = account.free_cash
    budget = min(equity * share, free_cash)
    per_unit = price / account.leverage + price * fee_rate if futures else price * (1 + fee_rate)
    qty = spec.floor_qty(budget / per_unit)
    while qty > 0 and outlay(account, qty, price, fee_rate, futures) > free_cash:
        qty -= spec.qty_step
    if qty < spec.min_qty or qty * price < spec.min_notional:
        return ZERO, f"order too small: {qty} {spec.symbol} at {price} is under the exchange minimum"
    return qty, ""


def rebalance_transfers(portfolio: Portfolio, weights: dict[str, Decimal]) -> dict[str, Decimal]:
    """Cash to move per sub-account (negative: it gives) toward `weights` of total equity, using free
    cash only. The amounts are exact to the cash quantum and add up to zero."""
    total = portfolio.equity()
    gaps = {s: cash(weights.get(s, ZERO) * total) - portfolio.equity(s) for s in portfolio.accounts}
    can_give = {s: min(-gap, portfolio.accounts[s].free_cash) for s, gap in gaps.items() if gap < 0}
    needs = {s: gap for s, gap in gaps.items() if gap > 0}
    pool, wanted = sum(can_give.values(), ZERO), sum(needs.values(), ZERO)
    moved = min(pool, wanted)
    if moved <= 0:
        return {}
    moves = {s: -cash(amount * moved / pool) for s, amount in can_give.items()}
    given = -sum(moves.values(), ZERO)
    receivers = sorted(needs)
    for s in receivers:
        moves[s] = cash(needs[s] * given / wanted)
    moves[receivers[-1]] += given - sum(moves[s] for s in receivers)  # the rounding remainder
    return {s: amount for s, amount in moves.items() if amount}
