"""Fork manager: point-in-time copies of the store for isolated backtests and what-ifs.

Forks come from a backend (core.forks), are recorded in fork_tracking with purpose, requester, TTL,
status and results, and are announced on `fork.*`. TTLs run on event time; expired forks are deleted,
and at start-up forks the registry does not know (orphans of a crash) are removed."""
from __future__ import annotations

import json
import secrets
import time

from core.config import Settings
from core.forks import FORK_PREFIX, ForkBackendError, backend_for
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
from core.store import redact

LIVE = ("creating", "active")


class ForkManager(Service):
    background = True

    def __init__(self, settings: Settings) -> None:
        super().__init__("forks", settings)

    def setup(self) -> None:
        try:
            self.backend = backend_for(self.settings)
        except ForkBackendError as error:  # stay up and say why on every request
            self.backend, self.backend_error = None, str(error)
            self.log.error("fork_backend_unavailable", backend=self.settings.fork_backend, error=str(error))
        self.publisher("forks.pub")
        self.serve("forks.rep", ForkRequests, self.on_request)
        # Event time from the feed's heartbeat: once a second is plenty for TTLs, and costs nothing.
        self.subscribe([self.settings.endpoint("feed.pub")], [b"hb.feed"], self.on_feed_heartbeat)
        self.event_time = self.store.scalar("SELECT MAX(open_time) + 60000 FROM candles") or 0
        self.remove_orphans()
        self.loop.every(2.0, self.sweep)
        if self.backend is not None and hasattr(self.backend, "close"):
            self._closables.append(self.backend)

    def on_feed_heartbeat(self, topic: bytes, beat: Heartbeat) -> None:
        self.event_time = max(self.event_time, beat.et)

    def on_request(self, request: CreateFork | ListForks) -> ForkReply | ForkList | ErrorReply:
        if isinstance(request, ListForks):
            return ForkList(forks=[dict(r) for r in self.store.query(
                "SELECT * FROM fork_tracking ORDER BY created_at DESC LIMIT 200")])
        return self.create(request)

    def create(self, request: CreateFork) -> ForkReply:
        if self.backend is None:
            return ForkReply(ok=False, reason=f"backend down: {self.backend_error}")
        active = self.store.scalar("SELECT COUNT(*) FROM fork_tracking WHERE status IN (?, ?)", LIVE)
        if active >= self.settings.max_forks:
            return ForkReply(ok=False, reason=f"limit reached: {active} live forks (max {self.settings.max_forks})")
        ttl = request.ttl_s or self.settings.fork_ttl_s
        fork_id = f"{FORK_PREFIX}{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
        self.store.execute(
            "INSERT INTO fork_tracking(fork_id, backend, parent, purpose, requester, path, created_at, created_et,"
            " ttl_s, expires_et, status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (fork_id, self.backend.name, redact(self.settings.store_location), request.purpose, request.requester, "",
             time.time(), self.event_time, ttl, self.event_time + ttl * 1000, "creating"))
        try:
            fork = self.backend.create(fork_id, request.writable)
        except ForkBackendError as error:
            self.set_status(fork_id, "destroyed", {"error": str(error)})
            self.log.error("fork_failed", fork_id=fork_id, error=str(error))
            return ForkReply(ok=False, reason=f"backend error: {error}")
        self.store.execute("UPDATE fork_tracking SET path=? WHERE fork_id=?", (fork.location, fork_id))
        self.set_status(fork_id, "active", fork.details)
        self.announce("created", fork_id, request.purpose, request.requester, "active", ttl, fork.location)
        self.log.info("fork_created", fork_id=fork_id, purpose=request.purpose, requester=request.requester,
                      **fork.details)
        return ForkReply(fork_id=fork_id, path=fork.location)

    def sweep(self) -> None:
        if self.backend is None:
            return
        expired = self.store.query("SELECT * FROM fork_tracking WHERE status = 'active' AND expires_et <= ?",
                                   (self.event_time,))
        for row in expired:
            self.destroy(row, "expired")
        try:
            self.backend.maintain()
        except ForkBackendError as error:
            self.log.error("fork_maintenance_failed", error=str(error))

    def destroy(self, row, why: str) -> None:
        if row["path"]:
            try:
                self.backend.destroy(row["path"])
            except ForkBackendError as error:  # keep the row; the next sweep tries again
                self.log.error("fork_destroy_failed", fork_id=row["fork_id"], error=str(error))
                return
        self.store.execute("UPDATE fork_tracking SET status='destroyed', destroyed_at=? WHERE fork_id=?",
                                (time.time(), row["fork_id"]))
        self.announce(why, row["fork_id"], row["purpose"], row["requester"], "destroyed", row["ttl_s"], row["path"])
        self.log.info("fork_destroyed", fork_id=row["fork_id"], why=why)

    def remove_orphans(self) -> None:
        """Forks half-made when the manager died, and forks no registry row owns."""
        if self.backend is None:
            return
        for row in self.store.query("SELECT * FROM fork_tracking WHERE status IN ('creating', 'destroying')"):
            self.destroy(row, "orphaned")
        for row in self.store.query("SELECT * FROM fork_tracking WHERE status = 'active'"):
            if not self.backend.exists(row["path"]):  # e.g. an exported snapshot dies with its holder
                self.destroy(row, "lost")
        known = {r[0] for r in self.store.query("SELECT path FROM fork_tracking WHERE status = 'active'")}
        try:
            for location in self.backend.orphans(known):
                self.backend.destroy(location)
                self.log.warning("orphan_removed", location=location)
        except ForkBackendError as error:
            self.log.error("orphan_sweep_failed", error=str(error))

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
