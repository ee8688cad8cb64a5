"""The store and the fork backend on a real PostgreSQL 15, started by the tests (initdb + pg_ctl):
the same schema and queries as on SQLite, template forks, read-only forks through an exported
snapshot, orphans by naming convention, and a whole mesh trading on it."""
from __future__ import annotations

import json
from decimal import Decimal

import psycopg
import pytest
from conftest import Mesh, wait_for
from test_mesh import reconcile

from meshtrader.forks.backends import PostgresForks
from meshtrader.ops.cli import fork_rows
from meshtrader.persistence.store import ORDER_BASICS, SCHEMA_VERSION, Store
from meshtrader.wire.messages import Candle
from tools.pgserver import LocalPostgres


@pytest.fixture(scope="module")
def postgres():
    server = LocalPostgres().start()  # its own directory under /tmp: the server's account must reach it
    yield server
    server.stop()


def candle(minute: int, close: float = 100.0) -> Candle:
    return Candle(symbol="BTCUSDT", tf="1m", open_time=1_746_316_800_000 + minute * 60_000, open=close, high=close + 1,
                  low=close - 1, close=close, volume=3.5, et=1_746_316_800_000 + (minute + 1) * 60_000)


def add_trade(store: Store, n: int) -> None:
    with store.transaction() as db:
        db.execute("INSERT INTO orders(" + ORDER_BASICS + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                   (f"o{n}", f"sig-{n}", "m", "BTCUSDT", "buy", "0.001", "95545.1", "FILLED", "", 1_746_316_800_000,
                    "", 1.0 + n))
        db.execute("INSERT INTO trades(trade_id, order_id, strategy, symbol, side, qty, price, fee, realized_pnl, "
                   "event_time, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                   (f"t{n}", f"o{n}", "m", "BTCUSDT", "buy", "0.001", "95545.1", "0.04777255", "0",
                    1_746_316_800_000, 1.0 + n))


def test_the_store_schema_and_queries_run_on_postgres(postgres):
    url = postgres.create_database("store")
    store = Store(url)
    Store(url).close()  # a second service migrates nothing
    assert store.dialect == "postgres" and store.scalar("SELECT version FROM schema_version") == SCHEMA_VERSION
    add_trade(store, 1)
    with pytest.raises(psycopg.errors.UniqueViolation):  # one order per signal, as on SQLite
        store.execute("INSERT INTO orders(" + ORDER_BASICS + ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                      ("o9", "sig-1", "m", "BTCUSDT", "buy", "1", "1", "FILLED", "", 0, "", 0.0))
    [trade] = store.trades()
    assert trade["fee"] == "0.04777255" and Decimal(trade["price"]) == Decimal("95545.1") and trade[0] == "t1"
    assert trade["liquidity"] == "taker" and trade["event_time"] == 1_746_316_800_000  # ms need 64 bits
    store.insert_candles([candle(0), candle(1), candle(1)])  # a repeated candle is ignored
    assert [b.open_time for b in store.bars("BTCUSDT")] == [candle(0).open_time, candle(1).open_time]
    assert store.recent_candles("BTCUSDT", 1)[0] == candle(1)
    store.insert_many("ledger", ("strategy", "amount", "reason", "event_time", "created_at"),
                      [("m", "50000.00000000", "funding", 0, 0.0), ("n", "50000.00000000", "funding", 0, 0.0)])
    assert [dict(r)["strategy"] for r in store.ledger()] == ["m", "n"]
    store.put_state("risk.book", {"kill_switch": True})
    store.put_state("risk.book", {"kill_switch": False})
    assert store.get_state("risk.book") == {"kill_switch": False}
    assert store.query("SELECT COUNT(*) FROM orders WHERE signal_id LIKE 'sig-%'")[0][0] == 1
    store.close()


def test_postgres_forks_template_snapshot_and_orphans(postgres):
    url = postgres.create_database("live")
    live = Store(url)
    add_trade(live, 1)
    forks = PostgresForks(url, golden_refresh_s=0)
    try:
        writable = forks.create("fork-20250601-aaaaaa", writable=True)
        read_only = forks.create("fork-20250601-bbbbbb", writable=False)
        assert writable.details["method"] == "template" and read_only.details["method"] == "exported_snapshot"
        assert forks.estimate(writable.details, 3600).endswith(" MB disk") and float(
            forks.estimate(writable.details, 3600).split()[0]) > 0
        add_trade(live, 2)  # after both forks: neither sees it

        copy = Store(writable.location)
        assert [r["trade_id"] for r in copy.trades()] == ["t1"]
        add_trade(copy, 3)  # a writable fork takes writes (and new ids) without touching the live store
        assert copy.scalar("SELECT COUNT(*) FROM trades") == 2
        copy.execute("INSERT INTO ledger(strategy, amount, reason, created_at) VALUES ('m', '1', 'what-if', 0)")
        copy.close()
        frozen = Store(read_only.location, read_only=True)
        assert [r["trade_id"] for r in frozen.trades()] == ["t1"]
        frozen.close()
        assert [r["trade_id"] for r in live.trades()] == ["t1", "t2"]

        assert forks.exists(writable.location) and forks.exists(read_only.location)
        assert forks.orphans({writable.location}) == []
        assert forks.orphans(set()) == [writable.location]  # by naming convention
        forks.destroy(writable.location)
        forks.destroy(read_only.location)
        assert not forks.exists(writable.location) and not forks.exists(read_only.location)
        with pytest.raises(Exception, match="not a fork"):
            forks.destroy(url)  # never the live database
    finally:
        forks.close()
        live.close()


PG_SECRET = "planted-pg-secret"  # the server trusts local connections: a password it ignores, that must not leak


def test_a_mesh_trades_forks_and_reconciles_on_postgres(postgres, tmp_path):
    url = postgres.create_database("mesh").replace(f"{postgres.user}@", f"{postgres.user}:{PG_SECRET}@", 1)
    # a validation every 2 market hours (1.5 s of replay): the second gives back the forks the first read
    mesh = Mesh(tmp_path / "home", {"MESH_DB_URL": url, "MESH_REPLAY_SPEED": "80", "MESH_VALIDATION_EVERY_MIN": "120",
                                    "MESH_VALIDATION_WINDOWS_MIN": "720,1440", "MESH_VALIDATION_WINDOW_WEIGHTS": "0.6,0.4"})
    mesh.start()
    try:
        assert not mesh.settings.db_path.exists()  # nothing in SQLite
        wait_for(lambda: mesh.query("SELECT weights FROM allocations WHERE reason LIKE 'validation%'"), 120,
                 "a validation on a postgres fork")
        listed = mesh.cli("forks", "--json").stdout
        forks = json.loads(listed)
        assert any(f["backend"] == "postgres" and f["purpose"] == "validation" and "validation" in (f["results"] or {})
                   for f in forks)
        assert PG_SECRET not in listed and any(":***@" in f["path"] for f in forks)  # locations redacted
        # the allocator's read-only forks (exported snapshots) are given back once read, not held for their TTL
        # (the registry as `mesh forks --json` lists it, read in this process: a poll is no Python start-up)
        wait_for(lambda: [f for f in fork_rows(mesh.settings) if f["requester"] == "allocator"
                          and f["status"] == "destroyed" and "allocator" in (f["results"] or {}).get("released_by", [])],
                 60, "a fork the allocator released")
        assert not mesh.query("SELECT reason FROM allocations WHERE reason LIKE '%what-if skipped%'")
        wait_for(lambda: mesh.trade_count() >= 5, 60, "trades")
        mesh.quiesce()
        reconcile(mesh)
        for service in ("forks", "allocator"):
            assert PG_SECRET not in (mesh.settings.log_dir / f"{service}.log").read_text(errors="replace")
    finally:
        mesh.stop()
