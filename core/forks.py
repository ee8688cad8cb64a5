"""Fork backends: point-in-time copies of the store, behind one interface (`create`, `destroy`,
`orphans`), chosen by MESH_FORK_BACKEND.

- sqlite (the embedded default): one consistent snapshot with the online backup API in a single step
  (a paged backup restarts on every concurrent write), kept as the "golden" copy for a while, and each
  fork a clone of it: a reflink (FICLONE) where the filesystem shares blocks, copy_file_range
  (in-kernel) otherwise, a plain copy as the last resort.
- tiger: Tiger Cloud service forks through its REST API (forkService, poll until READY, DELETE).
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

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

    def create(self, fork_id: str) -> Fork:
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

    def orphans(self, known: set[str]) -> list[str]:
        """Fork files no live registry row owns."""
        files = {str(p).removesuffix("-wal").removesuffix("-shm") for p in self.forks_dir.glob(f"{FORK_PREFIX}*.db*")}
        return sorted(files - known)


class TigerForks:
    """Tiger Cloud service forks: POST .../forkService (202), poll GET .../services/{id} until READY,
    DELETE .../services/{id}. HTTP Basic auth with TIGER_PUBLIC_KEY / TIGER_SECRET_KEY from the
    environment only."""

    name = "tiger"
    READY = "READY"
    FAILED = ("FAILED", "ERROR", "DELETED")

    def __init__(self, api_url: str, project_id: str, service_id: str, strategy: str = "LAST_SNAPSHOT",
                 poll_s: float = 5.0, timeout_s: float = 1800.0) -> None:
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

    def create(self, fork_id: str, target_time: str | None = None) -> Fork:
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

    def orphans(self, known: set[str]) -> list[str]:
        """Services named like our forks that the registry does not know (by naming convention)."""
        services = self._call("GET", "/services").json()
        mine = {f"tiger:{s['service_id']}" for s in services if str(s.get("name", "")).startswith(FORK_PREFIX)}
        return sorted(mine - known)


def backend_for(settings) -> SqliteForks | TigerForks:
    if settings.fork_backend == "tiger":
        return TigerForks(settings.tiger_api_url, settings.tiger_project_id or "", settings.tiger_service_id or "",
                          settings.tiger_fork_strategy, settings.tiger_poll_s)
    return SqliteForks(settings.db_path, settings.forks_dir, settings.fork_golden_max_age_s)
