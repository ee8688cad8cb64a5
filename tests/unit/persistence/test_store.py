"""The store on SQLite: schema, uniqueness, migrations."""
from __future__ import annotations

import json

import pytest

from meshtrader.persistence.store import ORDER_BASICS, SCHEMA_VERSION, Store


def test_schema_is_created_once_and_signal_ids_are_unique(tmp_path):
    store = Store(tmp_path / "s.db")
    Store(tmp_path / "s.db").close()  # a second service opening the same file migrates nothing
    assert store.scalar("PRAGMA user_version") == SCHEMA_VERSION
    assert store.scalar("PRAGMA journal_mode") == "wal"
    tables = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables >= {"candles", "signals", "orders", "trades", "positions", "strategy_performance", "allocations",
                      "risk_events", "agent_events", "fork_tracking", "market_regimes", "pr_events"}
    row = ("o1", "sig-1", "m", "BTCUSDT", "buy", "1", "1", "FILLED", "", 0, "", 0.0)
    store.execute("INSERT INTO orders(" + ORDER_BASICS + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
    with pytest.raises(Exception, match="UNIQUE"):
        store.execute("INSERT INTO orders(" + ORDER_BASICS + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", ("o2", *row[1:]))
    store.close()


def test_a_version_1_store_is_upgraded_in_place(tmp_path):
    import sqlite3

    from meshtrader.persistence.store import MIGRATIONS

    old = sqlite3.connect(tmp_path / "v1.db")
    old.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    old.execute("INSERT INTO orders VALUES ('o1','s1','m','BTCUSDT','buy','1','1','FILLED','',0,'',0)")
    old.execute("INSERT INTO trades(trade_id, order_id, strategy, symbol, side, qty, price, fee, realized_pnl, "
                "created_at) VALUES ('t1','o1','m','BTCUSDT','buy','1','1','0.0005','0',0)")
    old.commit()
    old.close()
    store = Store(tmp_path / "v1.db")
    assert store.scalar("PRAGMA user_version") == SCHEMA_VERSION
    assert [dict(r)["liquidity"] for r in store.trades()] == ["taker"]  # fills made before maker fees: takers
    store.close()


def test_a_shared_fork_keeps_what_each_use_was_for(tmp_path):
    """A read-only fork shared by two validations: the second's results replace the first's, but the triggers
    of both are kept (the one a caller asked for must stay findable)."""
    from meshtrader.persistence.fork_registry import ForkRegistry

    store = Store(str(tmp_path / "mesh.db"))
    registry = ForkRegistry(store)
    registry.register("f", "sqlite", "mesh.db", "validation", "allocator", 0, 60, 60_000, writable=False)
    registry.merge_results("f", {"trigger": "test", "triggers": ["test"], "scores": 1}, accumulate=("triggers",))
    registry.merge_results("f", {"trigger": "schedule", "triggers": ["schedule", "test"], "scores": 2},
                           accumulate=("triggers",))
    [row] = store.query("SELECT results FROM fork_tracking WHERE fork_id='f'")
    assert json.loads(row["results"]) == {"trigger": "schedule", "triggers": ["test", "schedule"], "scores": 2}
    store.close()
