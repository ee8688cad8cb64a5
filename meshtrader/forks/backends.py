"""Fork backends: point-in-time copies of the store, behind one interface (`create`, `destroy`,
`orphans`), chosen by MESH_FORK_BACKEND.

- sqlite (the embedded default): one consistent snapshot with the online backup API in a single step
  (a paged backup restarts on every concurrent write), kept as the "golden" copy for a while, and each
  fork a clone of it: a reflink (FICLONE) where the filesystem shares blocks, copy_file_range
  (in-kernel) otherwise, a plain copy as the last resort.
- postgres: a writable fork is a new database made from a golden template database (a file-level
  copy), the golden one rebuilt from one consistent (REPEATABLE READ) read of the live store on a
  schedule: the live database itself cannot be a template while services are connected to it.
  Read-only forks are an exported snapshot (`pg_export_snapshot`), held open by the fork manager;
  readers attach with `SET TRANSACTION SNAPSHOT` and see the store as of that instant, at no copying
  cost. The statements themselves are in meshtrader.persistence.pg_admin.
- tiger: Tiger Cloud service forks through its REST API (forkService, poll until READY, delete the
  service when done).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

FICLONE = 0x40049409  # _IOW(0x94, 9, int), from linux/fs.h
GOLDEN = "golden.db"


def clone_file(source: Path, target: Path) -> str:
    """Copy a file the cheapest way the filesystem allows; says which way it was."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        try:
            fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            return "reflink"
        except OSError:
            pass
        try:
            remaining = os.fstat(src.fileno()).st_size
            while remaining > 0:
                copied = os.copy_file_range(src.fileno(), dst.fileno(), remaining)
                if copied == 0:
                    break
                remaining -= copied
            return "copy_file_range"
        except OSError:
            src.seek(0)
            dst.seek(0)
            dst.truncate()
            shutil.copyfileobj(src, dst, 1 << 20)
            return "copy"


def snapshot(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite database in one backup step."""
    partial = target.with_suffix(".partial")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=10)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst, pages=-1)
    finally:
        dst.close()
        src.close()
    partial.rename(target)


FORK_PREFIX = "fork-"


@dataclass(frozen=True)
class Fork:
    location: str  # a file path (sqlite) or tiger:<service id>
    details: dict  # how it was made and how to reach it; stored as the fork's results


class ForkBackendError(Exception):
    pass


class SqliteForks:
    name = "sqlite"

    def __init__(self, db_path: Path, forks_dir: Path, golden_max_age_s: float) -> None:
        self.db_path = db_path
        self.forks_dir = forks_dir
        self.golden_max_age_s = golden_max_age_s
        self.golden_taken = 0.0

    @property
    def golden_path(self) -> Path:
        return self.forks_dir / GOLDEN

    def create(self, fork_id: str, writable: bool = True) -> Fork:
        """A clone of the golden snapshot (a file: readers open it read-only, so one kind serves both)."""
        snapshot_ms = 0.0
        if not self.golden_path.exists() or time.monotonic() - self.golden_taken > self.golden_max_age_s:
            started = time.perf_counter()
            try:
                snapshot(self.db_path, self.golden_path)
            except (sqlite3.Error, OSError) as error:
                raise ForkBackendError(f"snapshot failed: {error}") from None
            self.golden_taken = time.monotonic()
            snapshot_ms = (time.perf_counter() - started) * 1000
        target = self.forks_dir / f"{fork_id}.db"
        started = time.perf_counter()
        try:
            method = clone_file(self.golden_path, target)
        except OSError as error:
            target.unlink(missing_ok=True)
            raise ForkBackendError(f"clone failed: {error}") from None
        return Fork(str(target), {"method": method, "snapshot_ms": round(snapshot_ms, 2),
                                  "clone_ms": round((time.perf_counter() - started) * 1000, 2),
                                  "bytes": target.stat().st_size})

    def destroy(self, location: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(location + suffix).unlink(missing_ok=True)

    def exists(self, location: str) -> bool:
        return Path(location).exists()

    def estimate(self, details: dict, ttl_s: int) -> str:
        shared = "shared (reflink)" if details.get("method") == "reflink" else "disk"
        return f"{details.get('bytes', 0) / 1e6:.1f} MB {shared}"

    def maintain(self) -> None:
        """Nothing to do between requests: the golden snapshot is taken when a fork needs it."""

    def orphans(self, known: set[str]) -> list[str]:
        """Fork files no live registry row owns."""
        files = {str(p).removesuffix("-wal").removesuffix("-shm") for p in self.forks_dir.glob(f"{FORK_PREFIX}*.db*")}
        return sorted(files - known)


class TigerForks:
    """Tiger Cloud service forks: POST .../forkService (202), poll GET .../services/{id} until READY,
    delete .../services/{id} when done. HTTP Basic auth with TIGER_PUBLIC_KEY / TIGER_SECRET_KEY from the
    environment only."""

    name = "tiger"
    READY = "READY"
    FAILED = ("FAILED", "ERROR", "DELETED")

    def __init__(self, api_url: str, project_id: str, service_id: str, strategy: str = "LAST_SNAPSHOT",
                 poll_s: float = 5.0, timeout_s: float = 1800.0, usd_per_hour: float = 0.0) -> None:
        self.usd_per_hour = usd_per_hour
        public, secret = os.environ.get("TIGER_PUBLIC_KEY"), os.environ.get("TIGER_SECRET_KEY")
        if not public or not secret:
            raise ForkBackendError("tiger forks need TIGER_PUBLIC_KEY and TIGER_SECRET_KEY in the environment")
        if not project_id or not service_id:
            raise ForkBackendError("tiger forks need MESH_TIGER_PROJECT_ID and MESH_TIGER_SERVICE_ID")
        import httpx

        self.http = httpx.Client(base_url=f"{api_url.rstrip('/')}/projects/{project_id}", auth=(public, secret),
                                 timeout=30)
        self.service_id, self.strategy, self.poll_s, self.timeout_s = service_id, strategy, poll_s, timeout_s

    def _call(self, method: str, path: str, **kwargs):
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ForkBackendError(f"Tiger Cloud unreachable: {error}") from None
        if response.status_code >= 400:
            raise ForkBackendError(f"Tiger Cloud answered {response.status_code} to {method} {path}: "
                                   f"{response.text[:200]}")
        return response

    def create(self, fork_id: str, writable: bool = True, target_time: str | None = None) -> Fork:
        body = {"name": fork_id, "fork_strategy": "PITR" if target_time else self.strategy}
        if target_time:
            body["target_time"] = target_time
        started = time.monotonic()
        service = self._call("POST", f"/services/{self.service_id}/forkService", json=body).json()
        service_id = service["service_id"]
        while service.get("status") != self.READY:
            if service.get("status") in self.FAILED:
                raise ForkBackendError(f"fork {service_id} ended {service.get('status')}")
            if time.monotonic() - started > self.timeout_s:
                self.destroy(f"tiger:{service_id}")
                raise ForkBackendError(f"fork {service_id} not READY after {self.timeout_s:.0f}s")
            time.sleep(self.poll_s)
            service = self._call("GET", f"/services/{service_id}").json()
        endpoint = service.get("endpoint") or {}
        return Fork(f"tiger:{service_id}", {"service_id": service_id, "host": endpoint.get("host"),
                                            "port": endpoint.get("port"), "strategy": body["fork_strategy"],
                                            "ready_s": round(time.monotonic() - started, 2)})

    def destroy(self, location: str) -> None:
        service_id = location.removeprefix("tiger:")
        try:
            self._call("DELETE", f"/services/{service_id}")
        except ForkBackendError as error:
            if "404" not in str(error):
                raise

    def exists(self, location: str) -> bool:
        return True  # a Tiger service outlives the manager; a missing one answers 404 to its DELETE

    def estimate(self, details: dict, ttl_s: int) -> str:
        hours = ttl_s / 3600
        if self.usd_per_hour:
            return f"about ${self.usd_per_hour * hours:.2f} ({hours:.1f} h at ${self.usd_per_hour}/h)"
        return f"{hours:.1f} service-hours (MESH_TIGER_FORK_USD_PER_HOUR prices them)"

    def maintain(self) -> None:
        """Nothing between requests."""

    def orphans(self, known: set[str]) -> list[str]:
        """Services named like our forks that the registry does not know (by naming convention)."""
        services = self._call("GET", "/services").json()
        mine = {f"tiger:{s['service_id']}" for s in services if str(s.get("name", "")).startswith(FORK_PREFIX)}
        return sorted(mine - known)


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database."""
    return urlunsplit(urlsplit(url)._replace(path="/" + database))


class PostgresForks:
    name = "postgres"
    SNAPSHOT = "#snapshot="

    def __init__(self, url: str, golden_refresh_s: float) -> None:
        import psycopg

        from meshtrader.persistence import pg_admin

        self.psycopg, self.pg = psycopg, pg_admin
        self.url = url
        self.database = urlsplit(url).path.lstrip("/")
        if not self.database:
            raise ForkBackendError("MESH_DB_URL names no database")
        self.golden = f"{self.database}_golden"
        self.fork_prefix = f"{self.database}_fork_"
        self.golden_refresh_s = golden_refresh_s
        self.golden_built = 0.0
        self.exporters: dict[str, object] = {}  # snapshot id -> the connection holding it open
        try:
            self.admin = psycopg.connect(url, autocommit=True)
        except psycopg.Error as error:
            raise ForkBackendError(f"postgres unreachable: {error}") from None

    def _admin(self, operation, *args):
        """A pg_admin operation on the admin connection; a PostgreSQL error becomes a ForkBackendError."""
        try:
            return operation(self.admin, *args)
        except self.psycopg.Error as error:
            raise ForkBackendError(f"postgres: {error}".strip()) from None

    def create(self, fork_id: str, writable: bool = True) -> Fork:
        return self._writable(fork_id) if writable else self._read_only()

    def _read_only(self) -> Fork:
        started = time.perf_counter()
        try:
            exporter = self.psycopg.connect(self.url, autocommit=True)
            snapshot_id = self.pg.export_snapshot(exporter)
        except self.psycopg.Error as error:
            raise ForkBackendError(f"snapshot export failed: {error}") from None
        self.exporters[snapshot_id] = exporter
        return Fork(f"{self.url}{self.SNAPSHOT}{snapshot_id}",
                    {"method": "exported_snapshot", "snapshot": snapshot_id, "read_only": True,
                     "create_ms": round((time.perf_counter() - started) * 1000, 2)})

    def _writable(self, fork_id: str) -> Fork:
        refresh_ms = 0.0
        if not self._golden_exists():
            refresh_ms = self.refresh_golden()
        name = self.fork_prefix + fork_id.removeprefix(FORK_PREFIX).replace("-", "_")
        started = time.perf_counter()
        self._admin(self.pg.create_database, name, self.golden)
        return Fork(with_database(self.url, name),
                    {"method": "template", "database": name, "golden_refresh_ms": round(refresh_ms, 2),
                     "create_ms": round((time.perf_counter() - started) * 1000, 2), "read_only": False})

    def _golden_exists(self) -> bool:
        return self._admin(self.pg.database_exists, self.golden)

    def refresh_golden(self) -> float:
        """Rebuild the golden template from one consistent read of the live store; returns its ms.
        Built under another name and swapped in, so a fork never sees a half-built template."""
        from meshtrader.persistence.store import Store

        started = time.perf_counter()
        building = f"{self.golden}_next"
        self._admin(self.pg.drop_database, building)
        self._admin(self.pg.create_database, building, "template0")
        Store(with_database(self.url, building)).close()  # the schema, at the code's version
        try:
            with self.psycopg.connect(self.url) as source, self.psycopg.connect(with_database(self.url, building)) as target:
                self.pg.copy_tables(source, target, exclude=("schema_version",))
        except self.psycopg.Error as error:
            raise ForkBackendError(f"golden refresh failed: {error}") from None
        self._admin(self.pg.drop_database, self.golden)
        self._admin(self.pg.rename_database, building, self.golden)
        self.golden_built = time.monotonic()
        return (time.perf_counter() - started) * 1000

    def maintain(self) -> None:
        """Keep the golden template fresh on the schedule, so a writable fork is only a template copy."""
        if self.golden_refresh_s and time.monotonic() - self.golden_built > self.golden_refresh_s:
            self.refresh_golden()

    def destroy(self, location: str) -> None:
        if self.SNAPSHOT in location:
            exporter = self.exporters.pop(location.partition(self.SNAPSHOT)[2], None)
            if exporter is not None:
                exporter.close()
            return
        name = urlsplit(location).path.lstrip("/")
        if not name.startswith(self.fork_prefix):
            raise ForkBackendError(f"refusing to drop {name!r}: not a fork database")
        self._admin(self.pg.drop_database, name)

    def estimate(self, details: dict, ttl_s: int) -> str:
        if details.get("method") == "exported_snapshot":
            return "no copy: one connection holding a snapshot (delays vacuum)"
        size = self._admin(self.pg.database_size, details.get("database", ""))
        return f"{(size or 0) / 1e6:.1f} MB disk"

    def exists(self, location: str) -> bool:
        if self.SNAPSHOT in location:
            return location.partition(self.SNAPSHOT)[2] in self.exporters
        return self._admin(self.pg.database_exists, urlsplit(location).path.lstrip("/"))

    def orphans(self, known: set[str]) -> list[str]:
        """Fork databases (by naming convention) the registry does not know (locations as registered:
        passwords redacted)."""
        from meshtrader.runtime.redaction import redact

        names = self._admin(self.pg.databases_with_prefix, self.fork_prefix)
        return sorted({redact(with_database(self.url, name)) for name in names} - {redact(k) for k in known})

    def close(self) -> None:
        for exporter in self.exporters.values():
            exporter.close()
        self.admin.close()


def backend_for(settings) -> SqliteForks | PostgresForks | TigerForks:
    if settings.forks_via == "tiger":
        return TigerForks(settings.tiger_api_url, settings.tiger_project_id or "", settings.tiger_service_id or "",
                          settings.tiger_fork_strategy, settings.tiger_poll_s,
                          usd_per_hour=settings.tiger_fork_usd_per_hour)
    if settings.forks_via == "postgres":
        return PostgresForks(settings.db_url, settings.pg_golden_refresh_s)
    return SqliteForks(settings.db_path, settings.forks_dir, settings.fork_golden_max_age_s)
