"""Per-strategy sub-accounts with exact cash and positions (long-only, spot-like).

The same Portfolio is rebuilt from the store's ledger and trades at start-up, kept live by the
executor, and recomputed by tests to reconcile: cash + positions at the last price = equity.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from core.messages import AccountSnapshot, PositionView, StrategyAccount
from core.money import ZERO, Instrument, cash, fee


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

    def open_positions(self) -> int:
        return sum(1 for p in self.positions.values() if p.qty > 0)


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
        account = self.account(strategy)
        if account.cash + amount < 0:
            raise AccountingError(f"{strategy}: transfer of {amount} exceeds cash {account.cash}")
        account.cash += amount

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
        return realized

    def mark(self, symbol: str, price: Decimal) -> None:
        self.marks[symbol] = price

    # ----- valuation ----------------------------------------------------------------------------
    def _value(self, symbol: str, position: Position) -> Decimal:
        mark = self.marks.get(symbol)
        if mark is None:  # never marked: value at cost rather than invent a price
            return position.cost
        return position.qty * mark

    def exposure(self, strategy: str | None = None) -> Decimal:
        accounts = [self.accounts[strategy]] if strategy else self.accounts.values()
        return sum((self._value(s, p) for a in accounts for s, p in a.positions.items() if p.qty), ZERO)

    def equity(self, strategy: str | None = None) -> Decimal:
        accounts = [self.accounts[strategy]] if strategy else list(self.accounts.values())
        return sum((a.cash for a in accounts), ZERO) + self.exposure(strategy)

    def cash(self) -> Decimal:
        return sum((a.cash for a in self.accounts.values()), ZERO)

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
                                            positions=views))
        return AccountSnapshot(equity=self.equity(), cash=self.cash(), exposure=self.exposure(),
                               trades=self.trades(), accounts=accounts)

    # ----- rebuilding ---------------------------------------------------------------------------
    @classmethod
    def rebuild(cls, ledger: Iterable, trades: Iterable) -> Portfolio:
        """From the store's rows (ledger: strategy, amount; trades: strategy, symbol, side, qty, price, fee)."""
        portfolio = cls()
        for entry in ledger:
            portfolio.fund(entry["strategy"], Decimal(entry["amount"]))
        for t in trades:
            portfolio.apply_fill(t["strategy"], t["symbol"], t["side"], Decimal(t["qty"]),
                                 Decimal(t["price"]), Decimal(t["fee"]))
        return portfolio


def size_buy(account: SubAccount, equity: Decimal, price: Decimal, order_pct: Decimal,
             fee_rate: Decimal, spec: Instrument) -> tuple[Decimal, str]:
    """Quantity for a buy of `order_pct` of the strategy's equity, within its cash; (0, why) if none."""
    budget = min(equity * order_pct, account.cash)
    qty = spec.floor_qty(budget / (price * (1 + fee_rate)))
    while qty > 0 and qty * price + fee(qty * price, fee_rate) > account.cash:
        qty -= spec.qty_step
    if qty < spec.min_qty or qty * price < spec.min_notional:
        return ZERO, f"order too small: {qty} {spec.symbol} at {price} is under the exchange minimum"
    return qty, ""
