"""Durable records in SQLite (WAL): the schema, its migrations, and every query the mesh runs.

Money is stored as decimal TEXT so it reads back exactly. Each service opens its own connection;
the schema is created or upgraded at start-up under an IMMEDIATE transaction, so services starting
together do not race.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.marketdata import Bar, timeframe_ms
from core.messages import Candle

MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE candles (
        symbol TEXT NOT NULL, tf TEXT NOT NULL, open_time INTEGER NOT NULL,
        open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL,
        PRIMARY KEY (symbol, tf, open_time)) WITHOUT ROWID;
    CREATE TABLE signals (
        signal_id TEXT PRIMARY KEY, strategy TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL,
        confidence REAL, reason TEXT, price TEXT, event_time INTEGER, trace_id TEXT, outcome TEXT,
        received_at REAL NOT NULL);
    CREATE TABLE orders (
        order_id TEXT PRIMARY KEY, signal_id TEXT NOT NULL UNIQUE, strategy TEXT NOT NULL,
        symbol TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL, price TEXT, status TEXT NOT NULL,
        reason TEXT, event_time INTEGER, trace_id TEXT, created_at REAL NOT NULL);
    CREATE TABLE trades (
        trade_id TEXT PRIMARY KEY, order_id TEXT NOT NULL UNIQUE REFERENCES orders(order_id),
        strategy TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL,
        price TEXT NOT NULL, fee TEXT NOT NULL, realized_pnl TEXT NOT NULL, event_time INTEGER,
        trace_id TEXT, published INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL);
    CREATE INDEX trades_unpublished ON trades(published) WHERE published = 0;
    CREATE TABLE positions (
        strategy TEXT NOT NULL, symbol TEXT NOT NULL, qty TEXT NOT NULL, cost TEXT NOT NULL,
        updated_at REAL NOT NULL, PRIMARY KEY (strategy, symbol));
    CREATE TABLE ledger (
        entry_id INTEGER PRIMARY KEY, strategy TEXT NOT NULL, amount TEXT NOT NULL, reason TEXT NOT NULL,
        event_time INTEGER, created_at REAL NOT NULL);
    CREATE TABLE strategy_performance (
        id INTEGER PRIMARY KEY, strategy TEXT NOT NULL, event_time INTEGER, equity TEXT NOT NULL,
        cash TEXT NOT NULL, exposure TEXT NOT NULL, trades INTEGER NOT NULL, created_at REAL NOT NULL);
    CREATE TABLE allocations (
        id INTEGER PRIMARY KEY, event_time INTEGER, weights TEXT NOT NULL, reason TEXT NOT NULL,
        created_at REAL NOT NULL);
    CREATE TABLE risk_events (
        id INTEGER PRIMARY KEY, request_id TEXT, strategy TEXT, symbol TEXT, side TEXT, approved INTEGER,
        rule TEXT NOT NULL, reason TEXT NOT NULL, trading_state TEXT, event_time INTEGER,
        created_at REAL NOT NULL);
    CREATE TABLE agent_events (
        id INTEGER PRIMARY KEY, service TEXT NOT NULL, event TEXT NOT NULL, detail TEXT,
        created_at REAL NOT NULL);
    CREATE TABLE fork_tracking (
        fork_id TEXT PRIMARY KEY, backend TEXT NOT NULL, parent TEXT, purpose TEXT NOT NULL,
        requester TEXT NOT NULL, path TEXT, created_at REAL NOT NULL, created_et INTEGER NOT NULL,
        ttl_s INTEGER NOT NULL, expires_et INTEGER NOT NULL, status TEXT NOT NULL, results TEXT,
        destroyed_at REAL);
    CREATE TABLE market_regimes (
        id INTEGER PRIMARY KEY, event_time INTEGER, regime TEXT NOT NULL, metrics TEXT,
        created_at REAL NOT NULL);
    CREATE TABLE pr_events (
        id INTEGER PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL, body TEXT, event_time INTEGER,
        created_at REAL NOT NULL);
    CREATE TABLE service_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
    """,
    # version 2: maker or taker, since their fees differ
    """
    ALTER TABLE trades ADD COLUMN liquidity TEXT NOT NULL DEFAULT 'taker';
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
UPSERT_STATE = ("INSERT INTO service_state VALUES (?,?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value, "
                "updated_at=excluded.updated_at")


LOCK_WAIT_S = 10.0


def retry_locked(conn: sqlite3.Connection, sql: str) -> None:
    """Run a statement that needs a lock, retrying from 20 µs up: writers hold it for about 100 µs."""
    delay, deadline = 20e-6, time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            conn.execute(sql)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.005)


def begin_immediate(conn: sqlite3.Connection) -> None:
    retry_locked(conn, "BEGIN IMMEDIATE")


def connect(path: Path | str, read_only: bool = False, hot_path: bool = False) -> sqlite3.Connection:
    """Writers take the lock through `Store.transaction` (which retries in microseconds: SQLite's own
    busy handler sleeps a millisecond or more). A hot-path writer leaves WAL checkpoints, and their
    fsync, to the other writers."""
    if read_only:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False, timeout=LOCK_WAIT_S)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=0)
        retry_locked(conn, "PRAGMA journal_mode=WAL")
        # NORMAL: a commit survives a crash of any process; only a power loss can drop the last few.
        conn.execute("PRAGMA synchronous=NORMAL")
        if hot_path:
            conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.row_factory = sqlite3.Row
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Create or upgrade the schema; returns the version now in force."""
    begin_immediate(conn)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"database schema v{version} is newer than this code (v{SCHEMA_VERSION})")
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


class Store:
    def __init__(self, path: Path | str, read_only: bool = False, hot_path: bool = False) -> None:
        self.path = Path(path)
        self.conn = connect(self.path, read_only, hot_path)
        if not read_only:
            migrate(self.conn)

    def close(self) -> None:
        self.conn.close()

    def transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        row = self.conn.execute(sql, tuple(params)).fetchone()
        return row[0] if row else None

    # ----- candles ------------------------------------------------------------------------------
    def insert_candles(self, candles: Iterable[Candle]) -> None:
        rows = [(c.symbol, c.tf, c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in candles]
        with self.transaction():
            self.conn.executemany("INSERT OR IGNORE INTO candles VALUES (?,?,?,?,?,?,?,?)", rows)

    def recent_candles(self, symbol: str, n: int, tf: str = "1m") -> list[Candle]:
        rows = self.query("SELECT * FROM candles WHERE symbol=? AND tf=? ORDER BY open_time DESC LIMIT ?",
                          (symbol, tf, n))
        return [row_to_candle(r) for r in reversed(rows)]

    def bars(self, symbol: str, tf: str = "1m") -> list[Bar]:
        """Every stored candle of a symbol, oldest first, for the backtester."""
        return [Bar(*row) for row in self.conn.execute(
            "SELECT open_time, open, high, low, close, volume FROM candles WHERE symbol=? AND tf=? ORDER BY open_time",
            (symbol, tf))]


    # ----- key/value state (risk book, ...) -----------------------------------------------------
    def get_state(self, key: str) -> Any:
        raw = self.scalar("SELECT value FROM service_state WHERE key=?", (key,))
        return json.loads(raw) if raw else None

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        """One write statement in its own transaction."""
        with self.transaction() as db:
            db.execute(sql, tuple(params))

    def put_state(self, key: str, value: Any) -> None:
        self.execute(UPSERT_STATE, (key, json.dumps(value, default=str), time.time()))

    # ----- journals -----------------------------------------------------------------------------
    def agent_event(self, service: str, event: str, detail: Any = None) -> None:
        self.execute("INSERT INTO agent_events(service, event, detail, created_at) VALUES (?,?,?,?)",
                     (service, event, json.dumps(detail, default=str), time.time()))

    def insert_many(self, table: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if not rows:
            return
        marks = ",".join("?" * len(columns))
        with self.transaction():
            self.conn.executemany(f"INSERT INTO {table}({','.join(columns)}) VALUES ({marks})", rows)

    # ----- accounts -----------------------------------------------------------------------------
    def ledger(self) -> list[sqlite3.Row]:
        return self.query("SELECT strategy, amount, reason, event_time, created_at FROM ledger ORDER BY entry_id")

    def trades(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM trades ORDER BY created_at, rowid")

    def trade_count(self) -> int:
        return self.scalar("SELECT COUNT(*) FROM trades") or 0

    def seen_signal_ids(self) -> set[str]:
        """Signals already acted on: those that made an order, and those recorded without one."""
        return {r[0] for r in self.conn.execute("SELECT signal_id FROM orders UNION SELECT signal_id FROM signals")}


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        begin_immediate(self.conn)
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def row_to_candle(row: sqlite3.Row) -> Candle:
    return Candle(symbol=row["symbol"], tf=row["tf"], open_time=row["open_time"], open=row["open"],
                  high=row["high"], low=row["low"], close=row["close"], volume=row["volume"],
                  et=row["open_time"] + timeframe_ms(row["tf"]))

