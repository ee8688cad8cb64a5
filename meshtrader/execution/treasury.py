"""The sub-accounts' capital: funded once by the allocation, then rebalanced toward each new allocation
by moving free cash (positions are not sold for it). Transfers net to zero to the last digit. Their
performance over time is recorded here too."""
from __future__ import annotations

from decimal import Decimal

from meshtrader.domain.allocation import CASH
from meshtrader.domain.money import ZERO, cash
from meshtrader.domain.portfolio import Portfolio, rebalance_transfers
from meshtrader.execution.venue import Venue, VenueRejected, VenueUnavailable
from meshtrader.persistence.ledger import Ledger
from meshtrader.runtime.log import Logger
from meshtrader.wire.messages import AccountSnapshot

PERFORMANCE_EVERY_MS = 15 * 60_000  # strategy_performance rows, in event time


class Treasury:
    def __init__(self, ledger: Ledger, log: Logger) -> None:
        self.ledger, self.log = ledger, log
        self.applied = ledger.applied_weights()  # None until the first funding
        self.last_performance_et = 0

    def open_accounts(self, portfolio: Portfolio, venue: Venue, capital: Decimal, weights: dict[str, Decimal],
                      event_time: int) -> None:
        """First start: the capital, or no more than the exchange account holds, split by the allocation. Live, an
        exchange that does not say what it holds leaves the books unfunded and the error raised: the executor does
        not start (supervisord tries again) rather than book capital the account may not have."""
        if venue.remote:
            try:
                capital = min(capital, (venue.balances() or {}).get("USDT", ZERO))
            except (VenueRejected, VenueUnavailable) as error:
                self.log.error("live_venue_unavailable", error=str(error),
                               why="first start: the books are funded from the exchange's balance, so not yet")
                raise
        self.fund(portfolio, capital, weights, event_time)

    def fund(self, portfolio: Portfolio, capital: Decimal, weights: dict[str, Decimal], event_time: int) -> None:
        """First start: split the capital into sub-accounts by the current allocation."""
        moves = [(strategy, cash(capital * weight), f"initial allocation {weight}")
                 for strategy, weight in weights.items()]
        for strategy, amount, _ in moves:
            portfolio.fund(strategy, amount)
        self.ledger.transfer(moves, event_time, weights, portfolio.units_state())
        self.applied = dict(weights)
        self.log.info("accounts_funded", weights={k: str(v) for k, v in weights.items()})

    def rebalance(self, portfolio: Portfolio, weights: dict[str, Decimal], reason: str, event_time: int) -> bool:
        """Move free cash between sub-accounts toward `weights` of total equity, in one ledger transaction
        with the weights applied; False if there was nothing to do."""
        if weights == self.applied:
            return False
        if weights.get(CASH):  # the cash line: a sub-account that holds cash only, opened when first needed
            portfolio.account(CASH)
        unknown = [s for s in weights if s not in portfolio.accounts]
        if unknown:
            self.log.warning("allocation_for_unfunded_strategy", strategies=unknown)
        moves = rebalance_transfers(portfolio, {s: w for s, w in weights.items() if s not in unknown})
        why = f"rebalance: {reason}"[:500]
        ordered = sorted(moves.items(), key=lambda m: m[1])  # givers first: cash never dips
        for strategy, amount in ordered:
            portfolio.fund(strategy, amount)
        self.ledger.transfer([(s, amount, why) for s, amount in ordered], event_time, weights,
                             portfolio.units_state())
        self.applied = dict(weights)
        self.log.info("rebalanced", transfers={k: str(v) for k, v in moves.items()})
        return True

    def track_performance(self, portfolio: Portfolio, snapshot: AccountSnapshot, event_time: int) -> None:
        """Every PERFORMANCE_EVERY_MS of market time, a row per sub-account: the history of its equity."""
        if event_time - self.last_performance_et < PERFORMANCE_EVERY_MS:
            return
        self.last_performance_et = event_time
        self.ledger.performance(event_time, [
            (a.strategy, a.equity, a.cash, portfolio.exposure(a.strategy), portfolio.accounts[a.strategy].trades)
            for a in snapshot.accounts])
