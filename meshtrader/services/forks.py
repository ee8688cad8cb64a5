"""Fork manager: point-in-time copies of the store for isolated backtests and what-ifs.

Forks come from a backend (meshtrader.forks.backends), are recorded in fork_tracking with purpose, requester, TTL,
status and results, and are announced on `fork.*`. TTLs run on event time; expired forks are deleted,
and at start-up forks the registry does not know (orphans of a crash) are removed. A read-only request
shares a read-only fork made moments before (slow backends make that worth a lot); a fork the narrator
finds interesting is kept longer; a risk breach (halt, kill switch, a strategy deactivated) freezes an
incident fork of that moment. With MESH_FORK_POOL_SIZE, read-only forks are made in advance in a
background thread (a Tiger Cloud fork takes minutes) and handed out at once."""
from __future__ import annotations

import json
import queue
import secrets
import threading
import time

from meshtrader.forks.backends import FORK_PREFIX, ForkBackendError, backend_for
from meshtrader.runtime.config import Settings
from meshtrader.runtime.redaction import redact
from meshtrader.services.base import Service, main
from meshtrader.wire.messages import (
    CreateFork,
    ErrorReply,
    ForkEvent,
    ForkList,
    ForkReply,
    ForkRequests,
    Heartbeat,
    KeepFork,
    ListForks,
    RiskState,
)

LIVE = ("creating", "active")
POOLED = "pooled"


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
        self.subscribe([self.settings.endpoint("risk.pub")], [b"risk.state"], self.on_risk_state)
        self.risk_seen: RiskState | None = None
        self.last_incident: dict[str, float] = {}
        self.pool_made: queue.Queue = queue.Queue()
        self.pool_maker: threading.Thread | None = None
        if self.settings.fork_pool_size:
            self.loop.every(1.0, self.refill_pool, first_in=0)
        self.event_time = self.store.scalar("SELECT MAX(open_time) + 60000 FROM candles") or 0
        self.remove_orphans()
        self.loop.every(2.0, self.sweep)
        if self.backend is not None and hasattr(self.backend, "close"):
            self._closables.append(self.backend)

    def on_feed_heartbeat(self, topic: bytes, beat: Heartbeat) -> None:
        self.event_time = max(self.event_time, beat.et)

    def on_request(self, request: CreateFork | ListForks | KeepFork) -> ForkReply | ForkList | ErrorReply:
        if isinstance(request, ListForks):
            return ForkList(forks=[dict(r) for r in self.store.query(
                "SELECT * FROM fork_tracking ORDER BY created_at DESC LIMIT 200")])
        if isinstance(request, KeepFork):
            return self.keep(request)
        return self.create(request)

    def keep(self, request: KeepFork) -> ForkReply:
        row = self.store.query("SELECT path, expires_et FROM fork_tracking WHERE fork_id=? AND status='active'",
                               (request.fork_id,))
        if not row:
            return ForkReply(ok=False, fork_id=request.fork_id, reason="no such active fork")
        ttl = request.ttl_s or self.settings.fork_keep_ttl_s
        expires = max(row[0]["expires_et"], self.event_time + ttl * 1000)
        self.store.execute("UPDATE fork_tracking SET expires_et=?, ttl_s=?, kept=1 WHERE fork_id=?",
                           (expires, (expires - self.event_time) // 1000, request.fork_id))
        self.store.merge_fork_results(request.fork_id, {"interesting": request.reason})
        self.trim_kept()
        self.log.info("fork_kept", fork_id=request.fork_id, reason=request.reason, by=request.src)
        return ForkReply(fork_id=request.fork_id, path=row[0]["path"])

    def shareable(self, request: CreateFork) -> ForkReply | None:
        """A read-only fork made for the same purpose at most MESH_FORK_SHARE_S of market time ago (so it
        holds the same data, near enough), for a read-only request: its TTL stretched to cover the new holder."""
        if request.writable or not self.settings.fork_share_s:
            return None
        rows = self.store.query("SELECT fork_id, path, expires_et FROM fork_tracking WHERE status='active' AND "
                                "writable=0 AND purpose=? AND created_et >= ? ORDER BY created_at DESC LIMIT 1",
                                (request.purpose, self.event_time - self.settings.fork_share_s * 1000))
        if not rows:
            return None
        ttl = request.ttl_s or self.settings.fork_ttl_s
        expires = max(rows[0]["expires_et"], self.event_time + ttl * 1000)
        self.store.execute("UPDATE fork_tracking SET shared=shared+1, expires_et=? WHERE fork_id=?",
                           (expires, rows[0]["fork_id"]))
        self.log.info("fork_shared", fork_id=rows[0]["fork_id"], purpose=request.purpose, requester=request.requester)
        return ForkReply(fork_id=rows[0]["fork_id"], path=rows[0]["path"])

    def create(self, request: CreateFork) -> ForkReply:
        if self.backend is None:
            return ForkReply(ok=False, reason=f"backend down: {self.backend_error}")
        shared = self.shareable(request) or self.from_pool(request)
        if shared is not None:
            return shared
        active = self.store.scalar("SELECT COUNT(*) FROM fork_tracking WHERE status IN (?, ?) AND kept=0", LIVE)
        if active >= self.settings.max_forks:
            return ForkReply(ok=False, reason=f"limit reached: {active} live forks (max {self.settings.max_forks})")
        ttl = request.ttl_s or self.settings.fork_ttl_s
        fork_id = self.new_fork_id()
        self.store.execute(
            "INSERT INTO fork_tracking(fork_id, backend, parent, purpose, requester, path, created_at, created_et,"
            " ttl_s, expires_et, status, writable, kept) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (fork_id, self.backend.name, redact(self.settings.store_location), request.purpose, request.requester, "",
             time.time(), self.event_time, ttl, self.event_time + ttl * 1000, "creating", int(request.writable),
             int(request.purpose == "incident")))
        try:
            fork = self.backend.create(fork_id, request.writable)
        except ForkBackendError as error:
            self.set_status(fork_id, "destroyed", {"error": str(error)})
            self.log.error("fork_failed", fork_id=fork_id, error=str(error))
            return ForkReply(ok=False, reason=f"backend error: {error}")
        location = redact(fork.location)  # registry, bus and logs never carry a password
        self.store.execute("UPDATE fork_tracking SET path=?, cost_estimate=? WHERE fork_id=?",
                           (location, self.estimate(fork.details, ttl), fork_id))
        self.set_status(fork_id, "active", fork.details)
        self.announce("created", fork_id, request.purpose, request.requester, "active", ttl, location)
        self.log.info("fork_created", fork_id=fork_id, purpose=request.purpose, requester=request.requester,
                      **fork.details)
        return ForkReply(fork_id=fork_id, path=location)

    # ----- the pool: read-only forks made in advance ---------------------------------------------------
    def refill_pool(self) -> None:
        """Take in what the pool thread made; start making the next spare if the pool is short."""
        while not self.pool_made.empty():
            fork_id, made = self.pool_made.get()
            if isinstance(made, ForkBackendError):
                self.set_status(fork_id, "destroyed", {"error": str(made)})
                self.log.error("pool_fork_failed", fork_id=fork_id, error=str(made))
                continue
            self.store.execute("UPDATE fork_tracking SET path=?, status=?, results=? WHERE fork_id=?",
                               (redact(made.location), POOLED, json.dumps(made.details), fork_id))
            self.log.info("pool_fork_ready", fork_id=fork_id, **made.details)
        if self.backend is None or (self.pool_maker is not None and self.pool_maker.is_alive()):
            return
        spares = self.store.scalar("SELECT COUNT(*) FROM fork_tracking WHERE status=?", (POOLED,))
        if spares >= self.settings.fork_pool_size:
            return
        fork_id = self.new_fork_id()
        self.store.execute(
            "INSERT INTO fork_tracking(fork_id, backend, parent, purpose, requester, path, created_at, created_et,"
            " ttl_s, expires_et, status, writable) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (fork_id, self.backend.name, redact(self.settings.store_location), "pool", self.name, "", time.time(),
             self.event_time, 0, 0, "creating", 0))

        def make() -> None:
            try:
                self.pool_made.put((fork_id, self.backend.create(fork_id, False)))
            except ForkBackendError as error:
                self.pool_made.put((fork_id, error))

        self.pool_maker = threading.Thread(target=make, name="fork-pool", daemon=True)
        self.pool_maker.start()

    def from_pool(self, request: CreateFork) -> ForkReply | None:
        """The oldest spare, for a read-only request: it becomes the requester's fork, TTL from now."""
        if request.writable or not self.settings.fork_pool_size:
            return None
        rows = self.store.query("SELECT fork_id, path, created_at FROM fork_tracking WHERE status=? "
                                "ORDER BY created_at LIMIT 1", (POOLED,))
        if not rows:
            return None
        fork_id, ttl = rows[0]["fork_id"], request.ttl_s or self.settings.fork_ttl_s
        details = json.loads(self.store.scalar("SELECT results FROM fork_tracking WHERE fork_id=?", (fork_id,)) or "{}")
        self.store.execute("UPDATE fork_tracking SET purpose=?, requester=?, status='active', ttl_s=?, expires_et=?, "
                           "cost_estimate=? WHERE fork_id=?", (request.purpose, request.requester, ttl,
                                                              self.event_time + ttl * 1000,
                                                              self.estimate(details, ttl), fork_id))
        self.store.merge_fork_results(fork_id, {"from_pool": True,
                                                "pooled_s": round(time.time() - rows[0]["created_at"], 1)})
        self.announce("created", fork_id, request.purpose, request.requester, "active", ttl, rows[0]["path"])
        self.log.info("fork_from_pool", fork_id=fork_id, purpose=request.purpose, requester=request.requester)
        return ForkReply(fork_id=fork_id, path=rows[0]["path"])

    def estimate(self, details: dict, ttl_s: int) -> str:
        try:
            return self.backend.estimate(details, ttl_s)
        except ForkBackendError as error:
            return f"unknown ({error})"

    def new_fork_id(self) -> str:
        return f"{FORK_PREFIX}{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"

    # ----- incidents: a breach freezes the store as it was ---------------------------------------------
    def on_risk_state(self, topic: bytes, state: RiskState) -> None:
        seen, self.risk_seen = self.risk_seen, state
        if seen is None:
            return
        incidents = []
        if state.trading_state == "HALTED" and seen.trading_state != "HALTED":
            incidents.append(("halt", f"trading halted: {state.reason}"))
        if state.kill_switch and not seen.kill_switch:
            incidents.append(("kill_switch", "kill switch turned on"))
        for strategy in sorted(set(state.deactivated) - set(seen.deactivated)):
            incidents.append((f"deactivated:{strategy}", f"{strategy} deactivated: {state.reason}"))
        for key, why in incidents:
            if time.monotonic() - self.last_incident.get(key, -1e9) < 60:
                continue  # a flapping state makes one snapshot a minute, not one per flap
            self.last_incident[key] = time.monotonic()
            reply = self.create(CreateFork(purpose="incident", requester="risk", writable=True,
                                           ttl_s=self.settings.fork_keep_ttl_s))
            if reply.ok:
                self.store.merge_fork_results(reply.fork_id, {"incident": why})
                self.log.warning("incident_snapshot", fork_id=reply.fork_id, why=why)
                self.trim_kept()

    def trim_kept(self) -> None:
        """Kept forks (incidents, interesting ones) do not count against MESH_MAX_FORKS; beyond
        MESH_FORK_KEEP_MAX of them the oldest go."""
        rows = self.store.query("SELECT * FROM fork_tracking WHERE status='active' AND kept=1 ORDER BY created_at DESC")
        for row in rows[self.settings.fork_keep_max:]:
            self.destroy(row, "archive full")

    def sweep(self) -> None:
        if self.backend is None:
            return
        expired = self.store.query("SELECT * FROM fork_tracking WHERE (status = 'active' AND expires_et <= ?) "
                                   "OR status = 'destroying'", (self.event_time,))
        for row in expired:
            self.destroy(row, "expired")
        try:
            self.backend.maintain()
        except ForkBackendError as error:
            self.log.error("fork_maintenance_failed", error=str(error))

    def destroy(self, row, why: str) -> None:
        """Marked destroying first: a manager that dies half-way finishes the job at its next start."""
        self.store.execute("UPDATE fork_tracking SET status='destroying' WHERE fork_id=?", (row["fork_id"],))
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
        for row in self.store.query("SELECT * FROM fork_tracking WHERE status IN ('active', ?)", (POOLED,)):
            if not self.backend.exists(row["path"]):  # e.g. an exported snapshot dies with its holder
                self.destroy(row, "lost")
        known = {r[0] for r in self.store.query("SELECT path FROM fork_tracking WHERE status IN ('active', ?)",
                                                (POOLED,))}
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
