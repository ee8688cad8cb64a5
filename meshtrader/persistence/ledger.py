"""The ledger of cash moved into and between sub-accounts, the allocation it was moved to, and the
sub-accounts' performance over time."""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from meshtrader.persistence.store import UPSERT_STATE, Store

WEIGHTS_KEY = "executor.weights"  # the allocation the sub-accounts were last funded or rebalanced to
UNITS_KEY = "executor.units"  # each sub-account's units, for NAV (performance) across transfers
INSERT_LEDGER = "INSERT INTO ledger(strategy, amount, reason, event_time, created_at) VALUES (?,?,?,?,?)"


class Ledger:
    def __init__(self, store: Store) -> None:
        self.store = store

    def applied_weights(self) -> dict[str, Decimal] | None:
        applied = self.store.get_state(WEIGHTS_KEY)
        return {k: Decimal(v) for k, v in applied.items()} if applied else None

    def units(self) -> dict[str, str] | None:
        return self.store.get_state(UNITS_KEY)

    def transfer(self, moves: Iterable[tuple[str, Decimal, str]], event_time: int, weights: dict[str, Decimal],
                 units: dict[str, str]) -> None:
        """Transfers or first fundings (strategy, amount, reason) and the weights and units they leave, in
        one transaction, so a restart neither repeats nor misses them."""
        now = time.time()
        with self.store.transaction() as db:
            db.executemany(INSERT_LEDGER, [(s, str(amount), why, event_time, now) for s, amount, why in moves])
            for key, value in ((WEIGHTS_KEY, {k: str(v) for k, v in weights.items()}), (UNITS_KEY, units)):
                db.execute(UPSERT_STATE, (key, json.dumps(value), now))

    def performance(self, event_time: int, rows: list[tuple[str, Any, Any, Any, int]]) -> None:
        """One row per sub-account: (strategy, equity, cash, exposure, trades) at this event time."""
        now = time.time()
        self.store.insert_many("strategy_performance",
                               ("strategy", "event_time", "equity", "cash", "exposure", "trades", "created_at"),
                               [(s, event_time, str(e), str(c), str(x), n, now) for s, e, c, x, n in rows])
