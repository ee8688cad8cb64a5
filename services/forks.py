"""Fork manager: point-in-time copies of the store for isolated backtests and what-ifs.

Forks come from a backend (core.forks), are recorded in fork_tracking with purpose, requester, TTL,
status and results, and are announced on `fork.*`. TTLs run on event time; expired forks are deleted,
and at start-up forks the registry does not know (orphans of a crash) are removed."""
from __future__ import annotations

import json
import secrets
import sqlite3
import time

from core.config import Settings
from core.forks import SqliteForks
from core.messages import (
    CreateFork,
    ErrorReply,
    ForkEvent,
    ForkList,
    ForkReply,
    ForkRequests,
    Heartbeat,
    ListForks,
)
from core.service import Service, main

LIVE = ("creating", "active")


class ForkManager(Service):
    background = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("forks", settings)

    def setup(self) -> None:
        self.backend = SqliteForks(self.settings.db_path, self.settings.forks_dir, self.settings.fork_golden_max_age_s)
        self.publisher("forks.pub")
        self.serve("forks.rep", ForkRequests, self.on_request)
        # Event time from the feed's heartbeat: once a second is plenty for TTLs, and costs nothing.
        self.subscribe([self.settings.endpoint("feed.pub")], [b"hb.feed"], self.on_feed_heartbeat)
        self.event_time = self.store.scalar("SELECT MAX(open_time) + 60000 FROM candles") or 0
        self.remove_orphans()
        self.loop.every(2.0, self.sweep)

    def on_feed_heartbeat(self, topic: bytes, beat: Heartbeat) -> None:
        self.event_time = max(self.event_time, beat.et)

    def on_request(self, request: CreateFork | ListForks) -> ForkReply | ForkList | ErrorReply:
        if isinstance(request, ListForks):
            return ForkList(forks=[dict(r) for r in self.store.query(
                "SELECT * FROM fork_tracking ORDER BY created_at DESC LIMIT 200")])
        return self.create(request)

    def create(self, request: CreateFork) -> ForkReply:
        active = self.store.scalar("SELECT COUNT(*) FROM fork_tracking WHERE status IN (?, ?)", LIVE)
        if active >= self.settings.max_forks:
            return ForkReply(ok=False, reason=f"limit reached: {active} live forks (max {self.settings.max_forks})")
        ttl = request.ttl_s or self.settings.fork_ttl_s
        fork_id = f"fork-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
        path = self.settings.forks_dir / f"{fork_id}.db"
        self.store.execute(
            "INSERT INTO fork_tracking(fork_id, backend, parent, purpose, requester, path, created_at, created_et,"
            " ttl_s, expires_et, status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (fork_id, "sqlite", str(self.settings.db_path), request.purpose, request.requester, str(path),
             time.time(), self.event_time, ttl, self.event_time + ttl * 1000, "creating"))
        try:
            copy = self.backend.create(fork_id)
        except (sqlite3.Error, OSError) as error:
            self.set_status(fork_id, "destroyed", {"error": str(error)})
            self.backend.destroy(str(path))
            self.log.error("fork_failed", fork_id=fork_id, error=str(error))
            return ForkReply(ok=False, reason=f"backend error: {error}")
        self.set_status(fork_id, "active", {"snapshot_ms": copy.snapshot_ms, "clone_ms": copy.clone_ms,
                                            "method": copy.method, "bytes": path.stat().st_size})
        self.announce("created", fork_id, request.purpose, request.requester, "active", ttl, str(path))
        self.log.info("fork_created", fork_id=fork_id, purpose=request.purpose, requester=request.requester,
                      method=copy.method, snapshot_ms=copy.snapshot_ms, clone_ms=copy.clone_ms)
        return ForkReply(fork_id=fork_id, path=str(path))

    def sweep(self) -> None:
        expired = self.store.query("SELECT * FROM fork_tracking WHERE status = 'active' AND expires_et <= ?",
                                   (self.event_time,))
        for row in expired:
            self.destroy(row, "expired")

    def destroy(self, row, why: str) -> None:
        self.backend.destroy(row["path"])
        self.store.execute("UPDATE fork_tracking SET status='destroyed', destroyed_at=? WHERE fork_id=?",
                                (time.time(), row["fork_id"]))
        self.announce(why, row["fork_id"], row["purpose"], row["requester"], "destroyed", row["ttl_s"], row["path"])
        self.log.info("fork_destroyed", fork_id=row["fork_id"], why=why)

    def remove_orphans(self) -> None:
        """Forks half-made when the manager died, and files no registry row owns."""
        for row in self.store.query("SELECT * FROM fork_tracking WHERE status IN ('creating', 'destroying')"):
            self.destroy(row, "orphaned")
        known = {r[0] for r in self.store.query("SELECT path FROM fork_tracking WHERE status = 'active'")}
        for path in self.settings.forks_dir.glob("fork-*.db*"):
            if str(path).removesuffix("-wal").removesuffix("-shm") not in known:
                path.unlink(missing_ok=True)
                self.log.warning("orphan_removed", path=str(path))

    def set_status(self, fork_id: str, status: str, results: dict) -> None:
        self.store.execute("UPDATE fork_tracking SET status=?, results=? WHERE fork_id=?",
                                (status, json.dumps(results), fork_id))

    def announce(self, event: str, fork_id: str, purpose: str, requester: str, status: str, ttl: int,
                 path: str) -> None:
        self.pub.publish(b"fork." + event.encode(), ForkEvent(fork_id=fork_id, event=event, purpose=purpose,
                                                              requester=requester, status=status, ttl_s=ttl,
                                                              path=path, et=self.event_time))


if __name__ == "__main__":
    main(ForkManager)
