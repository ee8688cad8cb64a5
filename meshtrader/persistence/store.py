"""Durable records: the schema, its migrations, and the queries the mesh runs, on SQLite (WAL, the
embedded default) or PostgreSQL (`MESH_DB_URL`).

The schema and every query are written once, in the SQL both speak (`?` placeholders, `ON CONFLICT`);
`_Postgres` translates the few differences (placeholders, column types) in one place. Money is stored
as decimal TEXT so it reads back exactly. Each service opens its own connection; the schema is created
or upgraded at start-up under a lock, so services starting together do not race.
"""
from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from meshtrader.domain.candles import Bar, timeframe_ms
from meshtrader.runtime.redaction import is_postgres
from meshtrader.wire.messages import Candle

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
    # version 3: the meta-allocator's learned regime x strategy table; read-only forks can be shared;
    # kept forks (incidents, interesting ones) are archived apart from the working ones
    """
    CREATE TABLE regime_scores (
        regime TEXT NOT NULL, strategy TEXT NOT NULL, score REAL NOT NULL, samples INTEGER NOT NULL,
        updated_at REAL NOT NULL, PRIMARY KEY (regime, strategy));
    ALTER TABLE fork_tracking ADD COLUMN writable INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE fork_tracking ADD COLUMN shared INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE fork_tracking ADD COLUMN kept INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE fork_tracking ADD COLUMN cost_estimate TEXT;
    """,
    # version 4: every order state transition
    """
    CREATE TABLE order_events (
        order_id TEXT NOT NULL, seq INTEGER NOT NULL, from_status TEXT NOT NULL, to_status TEXT NOT NULL,
        filled_qty TEXT NOT NULL, reason TEXT, event_time INTEGER, created_at REAL NOT NULL,
        PRIMARY KEY (order_id, seq));
    """,
    # version 5: resting (limit) orders and when they time out
    """
    ALTER TABLE orders ADD COLUMN order_type TEXT NOT NULL DEFAULT 'market';
    ALTER TABLE orders ADD COLUMN expires_et INTEGER;
    CREATE INDEX orders_open ON orders(status) WHERE status IN ('ACCEPTED', 'PARTIALLY_FILLED');
    """,
    # version 6: an order may have several trades (part fills, levels of the book): order_id not unique
    """
    CREATE TABLE trades_v6 (
        trade_id TEXT PRIMARY KEY, order_id TEXT NOT NULL REFERENCES orders(order_id),
        strategy TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL, qty TEXT NOT NULL,
        price TEXT NOT NULL, fee TEXT NOT NULL, realized_pnl TEXT NOT NULL, event_time INTEGER,
        trace_id TEXT, published INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
        liquidity TEXT NOT NULL DEFAULT 'taker');
    INSERT INTO trades_v6 SELECT trade_id, order_id, strategy, symbol, side, qty, price, fee, realized_pnl,
        event_time, trace_id, published, created_at, liquidity FROM trades;
    DROP TABLE trades;
    ALTER TABLE trades_v6 RENAME TO trades;
    CREATE INDEX trades_unpublished ON trades(published) WHERE published = 0;
    CREATE INDEX trades_by_order ON trades(order_id);
    """,
    # version 7: futures funding settlements are ledger entries of their own kind, each booked once (its ref)
    """
    ALTER TABLE ledger ADD COLUMN kind TEXT NOT NULL DEFAULT 'transfer';
    ALTER TABLE ledger ADD COLUMN symbol TEXT;
    ALTER TABLE ledger ADD COLUMN ref TEXT;
    CREATE UNIQUE INDEX ledger_ref ON ledger(ref);
    """,
    # version 8: every funding settlement the feed published, so a paper executor down at one books it when back
    """
    CREATE TABLE funding_settlements (symbol TEXT NOT NULL, settled_at INTEGER NOT NULL, rate TEXT NOT NULL,
        mark TEXT NOT NULL, PRIMARY KEY (symbol, settled_at));
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
ORDER_BASICS = "order_id, signal_id, strategy, symbol, side, qty, price, status, reason, event_time, trace_id, created_at"
UPSERT_STATE = ("INSERT INTO service_state VALUES (?,?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value, "
                "updated_at=excluded.updated_at")


LOCK_WAIT_S = 10.0


class Cursorish(Protocol):
    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any: ...
    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Any: ...


# ----- SQLite ---------------------------------------------------------------------------------------
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


class _Sqlite:
    """Writers take the lock with BEGIN IMMEDIATE, retried in microseconds (SQLite's own busy handler
    sleeps a millisecond or more). A hot-path writer leaves WAL checkpoints, and their fsync, to the
    other writers."""

    dialect = "sqlite"

    def __init__(self, path: Path, read_only: bool, hot_path: bool) -> None:
        if read_only:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                                        check_same_thread=False, timeout=LOCK_WAIT_S)
        else:
            self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=0)
            retry_locked(self.conn, "PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives a crash of any process; only a power loss can drop the last few.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            if hot_path:
                self.conn.execute("PRAGMA wal_autocheckpoint=0")
        self.conn.row_factory = sqlite3.Row

    @contextmanager
    def transaction(self) -> Iterator[Cursorish]:
        begin_immediate(self.conn)
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def query(self, sql: str, params: tuple) -> list:
        return self.conn.execute(sql, params).fetchall()

    def migrate(self) -> int:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for statement in pending_statements(version):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return SCHEMA_VERSION

    def close(self) -> None:
        self.conn.close()


# ----- PostgreSQL -----------------------------------------------------------------------------------
class Row(tuple):
    """A result row readable by position and by column name, as sqlite3.Row is."""

    def __new__(cls, values: Iterable[Any], index: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._index = index
        return row

    def __getitem__(self, key: int | slice | str) -> Any:
        return super().__getitem__(self._index[key] if isinstance(key, str) else key)

    def keys(self) -> list[str]:
        return list(self._index)


def _row_factory(cursor: Any):
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


_PLACEHOLDERS: dict[str, str] = {}
_DDL_TYPES = ((re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
              (re.compile(r"\bINTEGER\b(?! GENERATED)"), "BIGINT"),  # epoch milliseconds do not fit 32 bits
              (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),        # PostgreSQL's REAL is 4 bytes
              (re.compile(r"\)\s*WITHOUT ROWID"), ")"))


def postgres_sql(sql: str) -> str:
    """`?` placeholders become psycopg's `%s` (cached: the mesh runs few distinct statements)."""
    translated = _PLACEHOLDERS.get(sql)
    if translated is None:
        translated = _PLACEHOLDERS[sql] = sql.replace("%", "%%").replace("?", "%s")
    return translated


def postgres_ddl(sql: str) -> str:
    for pattern, replacement in _DDL_TYPES:
        sql = pattern.sub(replacement, sql)
    return sql


class _PgCursor:
    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.cursor.execute(postgres_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        self.cursor.executemany(postgres_sql(sql), [tuple(r) for r in rows])


class _Postgres:
    """One psycopg connection in autocommit, explicit transactions for writes. A location ending in
    `#snapshot=ID` reads, read-only, the database as of an exported snapshot (`pg_export_snapshot`):
    a read-only fork that costs nothing to make."""

    dialect = "postgres"

    def __init__(self, url: str, read_only: bool) -> None:
        import psycopg

        url, _, fragment = url.partition("#")
        snapshot = fragment.removeprefix("snapshot=") if fragment.startswith("snapshot=") else ""
        self.conn = psycopg.connect(url, autocommit=True, row_factory=_row_factory)
        self.snapshot = snapshot
        if read_only:
            self.conn.execute("SET default_transaction_read_only = on")
        if snapshot:  # one long read-only transaction seeing the exporter's snapshot
            self.conn.autocommit = False
            self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self.conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")

    @contextmanager
    def transaction(self) -> Iterator[Cursorish]:
        with self.conn.transaction(), self.conn.cursor() as cursor:
            yield _PgCursor(cursor)

    def query(self, sql: str, params: tuple) -> list:
        return self.conn.execute(postgres_sql(sql), params).fetchall()

    def migrate(self) -> int:
        with self.transaction() as db:
            db.execute("SELECT pg_advisory_xact_lock(7275331)")  # services starting together take turns
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            for statement in pending_statements(version):
                db.execute(postgres_ddl(statement))
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
        return SCHEMA_VERSION

    def close(self) -> None:
        self.conn.close()


def pending_statements(version: int) -> list[str]:
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"database schema v{version} is newer than this code (v{SCHEMA_VERSION})")
    return [statement for number in range(version, SCHEMA_VERSION)
            for statement in MIGRATIONS[number].split(";") if statement.strip()]


# ----- the store ------------------------------------------------------------------------------------
class Store:
    """The mesh's durable records on either database; `location` is a SQLite file or a PostgreSQL URL."""

    def __init__(self, location: Path | str, read_only: bool = False, hot_path: bool = False) -> None:
        self.location = str(location)
        self.db = (_Postgres(self.location, read_only) if is_postgres(self.location)
                   else _Sqlite(Path(location), read_only, hot_path))
        self.dialect = self.db.dialect
        if not read_only:
            self.db.migrate()

    def close(self) -> None:
        self.db.close()

    def transaction(self):
        """A write transaction: `with store.transaction() as db: db.execute(...)`; rolled back on error."""
        return self.db.transaction()

    def query(self, sql: str, params: Iterable[Any] = ()) -> list:
        return self.db.query(sql, tuple(params))

    def records(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """The rows as dicts by column name: what views and the assistant hand on (JSON, the API)."""
        return [dict(r) for r in self.db.query(sql, tuple(params))]

    def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        rows = self.db.query(sql, tuple(params))
        return rows[0][0] if rows else None

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        """One write statement in its own transaction."""
        with self.transaction() as db:
            db.execute(sql, tuple(params))

    # ----- candles ------------------------------------------------------------------------------
    def insert_candles(self, candles: Iterable[Candle]) -> None:
        rows = [(c.symbol, c.tf, c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in candles]
        with self.transaction() as db:
            db.executemany("INSERT INTO candles VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING", rows)

    def recent_candles(self, symbol: str, n: int, tf: str = "1m") -> list[Candle]:
        rows = self.query("SELECT * FROM candles WHERE symbol=? AND tf=? ORDER BY open_time DESC LIMIT ?",
                          (symbol, tf, n))
        return [row_to_candle(r) for r in reversed(rows)]

    def bars(self, symbol: str, tf: str = "1m", since: int = 0, until: int = 2**62) -> list[Bar]:
        """A symbol's stored candles opened in [since, until), oldest first, for the backtester: a window is
        read from the store, not filtered from every bar (a validation's peak memory stays its window's)."""
        return [Bar(*row) for row in self.query(
            "SELECT open_time, open, high, low, close, volume FROM candles WHERE symbol=? AND tf=? AND open_time>=? "
            "AND open_time<? ORDER BY open_time", (symbol, tf, since, until))]

    def record_funding(self, symbol: str, settled_at: int, rate: Decimal, mark: Decimal | None) -> None:
        """A funding settlement as the feed published it (mark None: unknown), once however often it is."""
        self.execute("INSERT INTO funding_settlements VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                     (symbol, settled_at, str(rate), str(mark or "")))

    def funding_settlements(self, symbol: str, after: int) -> list[tuple[int, Decimal, Decimal | None]]:
        """A symbol's recorded settlements after a market time, oldest first: (time, rate, mark or None)."""
        return [(settled_at, Decimal(rate), Decimal(mark) if mark else None) for settled_at, rate, mark in self.query(
            "SELECT settled_at, rate, mark FROM funding_settlements WHERE symbol=? AND settled_at>? ORDER BY settled_at",
            (symbol, after))]

    def last_funding_settlement(self, symbol: str) -> int:
        """The time of the latest settlement recorded for `symbol` (0: none yet)."""
        return self.scalar("SELECT MAX(settled_at) FROM funding_settlements WHERE symbol=?", (symbol,)) or 0

    # ----- key/value state (risk book, ...) -----------------------------------------------------
    def get_state(self, key: str) -> Any:
        raw = self.scalar("SELECT value FROM service_state WHERE key=?", (key,))
        return json.loads(raw) if raw else None

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
        with self.transaction() as db:
            db.executemany(f"INSERT INTO {table}({','.join(columns)}) VALUES ({marks})", rows)

    def merge_fork_results(self, fork_id: str, results: dict) -> None:
        """Add keys to a fork's recorded results (JSON), keeping the others."""
        with self.transaction() as db:
            row = db.execute("SELECT results FROM fork_tracking WHERE fork_id=?", (fork_id,)).fetchone()
            merged = {**json.loads(row[0] or "{}"), **results} if row else results
            db.execute("UPDATE fork_tracking SET results=? WHERE fork_id=?", (json.dumps(merged, default=str), fork_id))

    # ----- the meta-allocator's regime x strategy table -----------------------------------------------
    def regime_scores(self, regime: str) -> dict[str, tuple[float, int]]:
        """What each strategy has scored in this regime so far: (score, validations seen)."""
        return {r["strategy"]: (r["score"], r["samples"]) for r in self.query(
            "SELECT strategy, score, samples FROM regime_scores WHERE regime=?", (regime,))}

    def learn_regime_scores(self, regime: str, scores: dict[str, float], alpha: float = 0.3) -> None:
        """Fold a validation's scores into the table (an exponential average: the regime's recent past counts most)."""
        known = self.regime_scores(regime)
        now = time.time()
        rows = []
        for strategy, value in scores.items():
            old, samples = known.get(strategy, (value, 0))
            rows.append((regime, strategy, old + alpha * (value - old) if samples else value, samples + 1, now))
        with self.transaction() as db:
            db.executemany("INSERT INTO regime_scores VALUES (?,?,?,?,?) ON CONFLICT(regime, strategy) DO UPDATE SET "
                           "score=excluded.score, samples=excluded.samples, updated_at=excluded.updated_at", rows)

    def regime_table(self) -> list[dict]:
        return self.records("SELECT regime, strategy, score, samples FROM regime_scores ORDER BY regime, score DESC")

    # ----- accounts -----------------------------------------------------------------------------
    def ledger(self) -> list:
        return self.query("SELECT strategy, amount, reason, event_time, created_at, kind, symbol, ref FROM ledger "
                          "ORDER BY entry_id")

    def trades(self) -> list:
        """Every trade in the order it was made."""
        return self.query("SELECT * FROM trades ORDER BY created_at, trade_id")

    def trade_count(self) -> int:
        return self.scalar("SELECT COUNT(*) FROM trades") or 0

    def seen_signal_ids(self) -> set[str]:
        """Signals already acted on: those that made an order, and those recorded without one."""
        return {r[0] for r in self.query("SELECT signal_id FROM orders UNION SELECT signal_id FROM signals")}


def row_to_candle(row: Any) -> Candle:
    return Candle(symbol=row["symbol"], tf=row["tf"], open_time=row["open_time"], open=row["open"],
                  high=row["high"], low=row["low"], close=row["close"], volume=row["volume"],
                  et=row["open_time"] + timeframe_ms(row["tf"]))
