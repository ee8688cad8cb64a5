"""PostgreSQL administration, for the postgres fork backend: databases made from a template and dropped,
exported snapshots, and the copy of the live tables a golden template is built from.

Each function takes a psycopg connection and raises psycopg.Error; database-level statements need a
connection in autocommit. Database and table names are quoted as identifiers, never pasted in.
"""
from __future__ import annotations

from typing import Any

from psycopg import sql


def _rows(conn: Any, statement: Any, params: tuple = ()) -> list[tuple]:
    cursor = conn.execute(statement, params or None)
    return cursor.fetchall() if cursor.description else []


# ----- databases ------------------------------------------------------------------------------------
def database_exists(conn: Any, name: str) -> bool:
    return bool(_rows(conn, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def databases_with_prefix(conn: Any, prefix: str) -> list[str]:
    return [name for (name,) in _rows(conn, "SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                      (prefix,))]


def database_size(conn: Any, name: str) -> int | None:
    """Bytes on disk, None for a database that is not there."""
    rows = _rows(conn, "SELECT pg_database_size(%s)", (name,))
    return rows[0][0] if rows else None


def create_database(conn: Any, name: str, template: str) -> None:
    """A file-level copy of the template (which nobody may be connected to)."""
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))


def drop_database(conn: Any, name: str) -> None:
    """Gone, whoever is connected to it (their sessions are ended); nothing if it is not there."""
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def rename_database(conn: Any, name: str, new_name: str) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(name), sql.Identifier(new_name)))


# ----- snapshots ------------------------------------------------------------------------------------
def export_snapshot(conn: Any) -> str:
    """Open a read-only repeatable-read transaction on this (autocommit) connection and export its snapshot:
    other sessions see the database as of now with `SET TRANSACTION SNAPSHOT`, for as long as the
    connection stays open."""
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    return _rows(conn, "SELECT pg_export_snapshot()")[0][0]


# ----- copying a database's tables ------------------------------------------------------------------
def user_tables(conn: Any, exclude: tuple[str, ...] = ()) -> list[str]:
    """The public schema's tables in creation order (referenced tables first)."""
    return [name for (name,) in _rows(
        conn, "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace "
              "ORDER BY oid") if name not in exclude]


def reset_identity_sequences(conn: Any) -> None:
    """Each identity column's sequence continues after the highest id the table holds."""
    columns = _rows(conn, "SELECT table_name, column_name FROM information_schema.columns "
                          "WHERE table_schema = 'public' AND is_identity = 'YES'")
    for table, column in columns:
        conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence(%s, %s), "
                             "(SELECT COALESCE(MAX({}), 0) + 1 FROM {}), false)").format(
            sql.Identifier(column), sql.Identifier(table)), (table, column))


def copy_tables(source: Any, target: Any, exclude: tuple[str, ...] = ()) -> list[str]:
    """Copy every table's rows from one consistent (repeatable read) view of `source` into the same,
    empty, tables of `target` (binary COPY), then move target's identity sequences past the copied ids.
    Both connections in a transaction (not autocommit); returns the tables copied."""
    source.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
    tables = user_tables(source, exclude)
    for table in tables:
        with source.cursor().copy(sql.SQL("COPY {} TO STDOUT (FORMAT BINARY)").format(sql.Identifier(table))) as out, \
                target.cursor().copy(sql.SQL("COPY {} FROM STDIN (FORMAT BINARY)").format(
                    sql.Identifier(table))) as into:
            for chunk in out:
                into.write(chunk)
    reset_identity_sequences(target)
    return tables
