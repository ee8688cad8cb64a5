"""Per-strategy sub-accounts with exact cash and positions (long-only, spot-like).

The same Portfolio is rebuilt from the store's ledger and trades at start-up, kept live by the
executor, and recomputed by tests to reconcile: cash + positions at the last price = equity.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from meshtrader.domain.money import ZERO, Instrument, cash, fee
from meshtrader.wire.messages import AccountSnapshot, PositionView, StrategyAccount

NAV_QUANTUM = Decimal("0.0000000001")


class AccountingError(ValueError):
    pass


@dataclass
class Position:
    qty: Decimal = ZERO
    cost: Decimal = ZERO  # what the open quantity cost, buy fees included


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

    def open_positions(self) -> int:
        count = 0
        for position in self.positions.values():
            if position.qty > 0:
                count += 1
        return count

    @property
    def free_cash(self) -> Decimal:
        return self.cash - self.reserved

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
    def __init__(self) -> None:
        self.accounts: dict[str, SubAccount] = {}
        self.marks: dict[str, Decimal] = {}

    def account(self, strategy: str) -> SubAccount:
        found = self.accounts.get(strategy)
        if found is None:
            found = self.accounts[strategy] = SubAccount(strategy)
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
        """Book a fill; returns its realized PnL (zero for buys)."""
        if qty <= 0:
            raise AccountingError(f"fill quantity must be positive, got {qty}")
        account = self.account(strategy)
        position = account.positions.setdefault(symbol, Position())
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
        account.realized_pnl += realized
        if realized > 0:
            account.wins += 1
            account.gross_profit += realized
        elif realized < 0:
            account.losses += 1
            account.gross_loss -= realized
        return realized

    def mark(self, symbol: str, price: Decimal) -> None:
        self.marks[symbol] = price

    # ----- valuation (plain loops: every order is judged on these sums) ---------------------------------
    def exposure(self, strategy: str | None = None) -> Decimal:
        """Open positions at their marks; a position never marked at cost, rather than invent a price."""
        marks, total = self.marks, ZERO
        for account in (self.accounts[strategy],) if strategy else self.accounts.values():
            for symbol, position in account.positions.items():
                if position.qty:
                    mark = marks.get(symbol)
                    total += position.cost if mark is None else position.qty * mark
        return total

    def equity(self, strategy: str | None = None) -> Decimal:
        if strategy:
            return self.accounts[strategy].cash + self.exposure(strategy)
        return self.cash() + self.exposure()

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
            views = [PositionView(symbol=s, qty=p.qty, cost=p.cost,
                                  avg_price=cash(p.cost / p.qty) if p.qty else ZERO,
                                  last_price=self.marks.get(s, ZERO))
                     for s, p in sorted(account.positions.items()) if p.qty]
            accounts.append(StrategyAccount(strategy=name, cash=account.cash, equity=self.equity(name),
                                            nav=self.nav(name), positions=views))
        return AccountSnapshot(equity=self.equity(), cash=self.cash(), exposure=self.exposure(),
                               trades=self.trades(), accounts=accounts)

    # ----- rebuilding ---------------------------------------------------------------------------
    @classmethod
    def rebuild(cls, ledger: Iterable, trades: Iterable) -> Portfolio:
        """From the store's rows, in the order they happened (ledger: strategy, amount, created_at;
        trades: strategy, symbol, side, qty, price, fee, created_at). Cash and positions come out exact;
        units (performance) are restored from what the executor saved, see `units_state`."""
        portfolio = cls()
        events = sorted([(row["created_at"], 0, i, row) for i, row in enumerate(ledger)] +
                        [(row["created_at"], 1, i, row) for i, row in enumerate(trades)], key=lambda e: e[:3])
        for _, kind, _, row in events:
            if kind == 0:
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


def size_buy(account: SubAccount, equity: Decimal, price: Decimal, order_pct: Decimal,
             fee_rate: Decimal, spec: Instrument) -> tuple[Decimal, str]:
    """Quantity for a buy of `order_pct` of the strategy's equity, within its cash; (0, why) if none."""
    free_cash = account.free_cash
    budget = min(equity * order_pct, free_cash)
    qty = spec.floor_qty(budget / (price * (1 + fee_rate)))
    while qty > 0 and qty * price + fee(qty * price, fee_rate) > free_cash:
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
