"""Fork backends: point-in-time copies of the store.

sqlite (the embedded default): one consistent snapshot with the online backup API in a single step
(a paged backup restarts on every concurrent write), kept as the "golden" copy for a while, and each
fork a clone of it: a reflink (FICLONE) where the filesystem shares blocks, copy_file_range (in-kernel)
otherwise, a plain copy as the last resort.
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


@dataclass(frozen=True)
class ForkCopy:
    path: Path
    method: str
    snapshot_ms: float  # 0 when the golden snapshot was reused
    clone_ms: float


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

    def create(self, fork_id: str) -> ForkCopy:
        snapshot_ms = 0.0
        if not self.golden_path.exists() or time.monotonic() - self.golden_taken > self.golden_max_age_s:
            started = time.perf_counter()
            snapshot(self.db_path, self.golden_path)
            self.golden_taken = time.monotonic()
            snapshot_ms = (time.perf_counter() - started) * 1000
        target = self.forks_dir / f"{fork_id}.db"
        started = time.perf_counter()
        method = clone_file(self.golden_path, target)
        return ForkCopy(target, method, round(snapshot_ms, 2), round((time.perf_counter() - started) * 1000, 2))

    def destroy(self, path: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
