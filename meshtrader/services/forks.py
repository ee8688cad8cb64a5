"""Fork manager: point-in-time copies of the store for isolated backtests and what-ifs.

Forks come from a backend (meshtrader.forks.backends), are recorded in the fork registry
(meshtrader.persistence.fork_registry) with purpose, requester, TTL, status and results, and are
announced on `fork.*`. A fork goes when every holder has released it (the allocator releases each fork
once it has read it) or at the end of its TTL, which runs on event time and is there for holders that
die; at start-up forks the registry does not know (orphans of a crash) are removed. A read-only request
shares a read-only fork made moments before (slow backends make that worth a lot); a fork the narrator
finds interesting is kept longer; a risk breach (halt, kill switch, a strategy deactivated) freezes one
incident fork of that moment, whatever the breach set off at once. With MESH_FORK_POOL_SIZE, read-only
forks are made in advance in a background thread (a Tiger Cloud fork takes minutes) and handed out at
once."""
from __future__ import annotations

import json
import queue
import secrets
import threading
import time

from meshtrader.forks.backends import FORK_PREFIX, Fork, ForkBackendError, backend_for
from meshtrader.persistence import views
from meshtrader.persistence.fork_registry import ACTIVE, RELEASED, ForkRegistry
from meshtrader.runtime.config import Settings
from meshtrader.runtime.metrics import FORK_BUCKETS
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

INCIDENT_GAP_S = 60  # a flapping state makes one snapshot a minute, not one per flap


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
        self.registry = ForkRegistry(self.store)
        self.creation_seconds = self.metrics.histogram("mesh_fork_creation_seconds", "time a backend takes to make "
                                                       "a fork", ("backend",), FORK_BUCKETS)
        self.active_gauge = self.metrics.gauge("mesh_forks_active", "forks being made or in use, kept ones included",
                                               ("purpose",))
        self.publisher("forks.pub")
        self.serve("forks.rep", ForkRequests, self.on_request)
        # Event time from the feed's heartbeat: once a second is plenty for TTLs, and costs nothing.
        self.subscribe([self.settings.endpoint("feed.pub")], [b"hb.feed"], self.on_feed_heartbeat)
        self.subscribe([self.settings.endpoint("risk.pub")], [b"risk.state"], self.on_risk_state)
        self.risk_seen: RiskState | None = None
        self.purposes_seen: set[str] = set()  # fork purposes the active gauge has shown
        self.last_incident: dict[str, float] = {}
        self.pool_made: queue.Queue = queue.Queue()
        self.pool_maker: threading.Thread | None = None
        if self.settings.fork_pool_size:
            self.loop.every(1.0, self.refill_pool, first_in=0)
        self.event_time = views.candles_end(self.store)
        self.remove_orphans()
        self.loop.every(2.0, self.sweep)
        if self.backend is not None and hasattr(self.backend, "close"):
            self._closables.append(self.backend)

    def on_feed_heartbeat(self, topic: bytes, beat: Heartbeat) -> None:
        self.event_time = max(self.event_time, beat.et)

    def on_request(self, request: CreateFork | ListForks | KeepFork) -> ForkReply | ForkList | ErrorReply:
        if isinstance(request, ListForks):
            return ForkList(forks=self.registry.listing(200))
        if isinstance(request, KeepFork):
            return self.keep(request)
        return self.create(request)

    def keep(self, request: KeepFork) -> ForkReply:
        """Kept longer, apart from the working forks; one its holders released but that is not gone yet too."""
        row = self.registry.get(request.fork_id)
        if row is None or row["status"] not in (ACTIVE, RELEASED):
            return ForkReply(ok=False, fork_id=request.fork_id, reason="no such active fork")
        ttl = request.ttl_s or self.settings.fork_keep_ttl_s
        expires = max(row["expires_et"], self.event_time + ttl * 1000)
        if not self.registry.keep(request.fork_id, expires, (expires - self.event_time) // 1000):
            return ForkReply(ok=False, fork_id=request.fork_id, reason="no such active fork")
        self.registry.merge_results(request.fork_id, {"interesting": request.reason})
        self.trim_kept()
        self.log.info("fork_kept", fork_id=request.fork_id, reason=request.reason, by=request.src)
        return ForkReply(fork_id=request.fork_id, path=row["path"])

    def shareable(self, request: CreateFork) -> ForkReply | None:
        """A read-only fork made for the same purpose at most MESH_FORK_SHARE_S of market time ago (so it
        holds the same data, near enough), for a read-only request: its TTL stretched to cover the new holder."""
        if request.writable or not self.settings.fork_share_s:
            return None
        row = self.registry.shareable(request.purpose, self.event_time - int(self.settings.fork_share_s * 1000))
        if row is None:
            return None
        ttl = request.ttl_s or self.settings.fork_ttl_s
        self.registry.share(row["fork_id"], max(row["expires_et"], self.event_time + ttl * 1000))
        self.log.info("fork_shared", fork_id=row["fork_id"], purpose=request.purpose, requester=request.requester)
        return ForkReply(fork_id=row["fork_id"], path=row["path"])

    def create(self, request: CreateFork) -> ForkReply:
        if self.backend is None:
            return ForkReply(ok=False, reason=f"backend down: {self.backend_error}")
        shared = self.shareable(request) or self.from_pool(request)
        if shared is not None:
            return shared
        active = self.registry.live_count()
        if active >= self.settings.max_forks:
            held = ", ".join(f"{n} {p}" for p, n in self.registry.counts_by_purpose().items())
            return ForkReply(ok=False, reason=f"limit reached: {active} live forks (max {self.settings.max_forks}): "
                                              f"{held}")
        ttl = request.ttl_s or self.settings.fork_ttl_s
        fork_id = self.new_fork_id()
        self.registry.register(fork_id, self.backend.name, redact(self.settings.store_location), request.purpose,
                               request.requester, self.event_time, ttl, self.event_time + ttl * 1000, request.writable,
                               kept=request.purpose == "incident")
        try:
            fork = self.timed_create(fork_id, request.writable)
        except ForkBackendError as error:
            self.registry.set_status(fork_id, "destroyed", {"error": str(error)})
            self.log.error("fork_failed", fork_id=fork_id, error=str(error))
            return ForkReply(ok=False, reason=f"backend error: {error}")
        location = redact(fork.location)  # registry, bus and logs never carry a password
        self.registry.located(fork_id, location, self.estimate(fork.details, ttl))
        self.registry.set_status(fork_id, ACTIVE, fork.details)
        self.announce("created", fork_id, request.purpose, request.requester, ACTIVE, ttl, location)
        self.log.info("fork_created", fork_id=fork_id, purpose=request.purpose, requester=request.requester,
                      **fork.details)
        return ForkReply(fork_id=fork_id, path=location)

    # ----- the pool: read-only forks made in advance ---------------------------------------------------
    def refill_pool(self) -> None:
        """Take in what the pool thread made; start making the next spare if the pool is short."""
        while not self.pool_made.empty():
            fork_id, made, seconds = self.pool_made.get()
            self.creation_seconds.labels(self.name, self.backend.name).observe(seconds)
            if isinstance(made, ForkBackendError):
                self.registry.set_status(fork_id, "destroyed", {"error": str(made)})
                self.log.error("pool_fork_failed", fork_id=fork_id, error=str(made))
                continue
            self.registry.pooled(fork_id, redact(made.location), made.details)
            self.log.info("pool_fork_ready", fork_id=fork_id, **made.details)
        if self.backend is None or (self.pool_maker is not None and self.pool_maker.is_alive()):
            return
        if self.registry.pooled_count() >= self.settings.fork_pool_size:
            return
        fork_id = self.new_fork_id()
        self.registry.register(fork_id, self.backend.name, redact(self.settings.store_location), "pool", self.name,
                               self.event_time, 0, 0, writable=False)

        def make() -> None:  # timed here, counted on the loop thread (refill_pool), which owns the histogram
            started = time.perf_counter()
            try:
                made = self.backend.create(fork_id, False)
            except ForkBackendError as error:
                made = error
            self.pool_made.put((fork_id, made, time.perf_counter() - started))

        self.pool_maker = threading.Thread(target=make, name="fork-pool", daemon=True)
        self.pool_maker.start()

    def timed_create(self, fork_id: str, writable: bool) -> Fork:
        """The backend's fork, its making timed (failed attempts too: a slow failure is slow)."""
        started = time.perf_counter()
        try:
            return self.backend.create(fork_id, writable)
        finally:
            self.creation_seconds.labels(self.name, self.backend.name).observe(time.perf_counter() - started)

    def from_pool(self, request: CreateFork) -> ForkReply | None:
        """The oldest spare, for a read-only request: it becomes the requester's fork, TTL from now."""
        if request.writable or not self.settings.fork_pool_size:
            return None
        row = self.registry.oldest_pooled()
        if row is None:
            return None
        fork_id, ttl = row["fork_id"], request.ttl_s or self.settings.fork_ttl_s
        details = json.loads(row["results"] or "{}")
        self.registry.hand_out(fork_id, request.purpose, request.requester, ttl, self.event_time + ttl * 1000,
                               self.estimate(details, ttl))
        self.registry.merge_results(fork_id, {"from_pool": True, "pooled_s": round(time.time() - row["created_at"], 1)})
        self.announce("created", fork_id, request.purpose, request.requester, ACTIVE, ttl, row["path"])
        self.log.info("fork_from_pool", fork_id=fork_id, purpose=request.purpose, requester=request.requester)
        return ForkReply(fork_id=fork_id, path=row["path"])

    def estimate(self, details: dict, ttl_s: int) -> str:
        try:
            return self.backend.estimate(details, ttl_s)
        except ForkBackendError as error:
            return f"unknown ({error})"

    def new_fork_id(self) -> str:
        return f"{FORK_PREFIX}{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"

    # ----- incidents: a breach freezes the store as it was ---------------------------------------------
    def on_risk_state(self, topic: bytes, state: RiskState) -> None:
        """One incident fork per breach. A breach can show several ways at once (the kill switch turned on
        also halts trading): they are one incident, one fork, every reason on it."""
        seen, self.risk_seen = self.risk_seen, state
        if seen is None:
            return
        breaches = []
        if state.trading_state == "HALTED" and seen.trading_state != "HALTED":
            breaches.append(("halt", f"trading halted: {state.reason}"))
        if state.kill_switch and not seen.kill_switch:
            breaches.append(("kill_switch", "kill switch turned on"))
        for strategy in sorted(set(state.deactivated) - set(seen.deactivated)):
            breaches.append((f"deactivated:{strategy}", f"{strategy} deactivated: {state.reason}"))
        now = time.monotonic()
        fresh = [(key, why) for key, why in breaches if now - self.last_incident.get(key, -1e9) >= INCIDENT_GAP_S]
        if not fresh:
            return
        for key, _ in fresh:
            self.last_incident[key] = now
        why = "; ".join(why for _, why in fresh)
        reply = self.create(CreateFork(purpose="incident", requester="risk", writable=True,
                                       ttl_s=self.settings.fork_keep_ttl_s))
        if reply.ok:
            self.registry.merge_results(reply.fork_id, {"incident": why})
            self.log.warning("incident_snapshot", fork_id=reply.fork_id, why=why)
            self.trim_kept()

    def trim_kept(self) -> None:
        """Kept forks (incidents, interesting ones) do not count against MESH_MAX_FORKS; beyond
        MESH_FORK_KEEP_MAX of them the oldest go."""
        for row in self.registry.kept()[self.settings.fork_keep_max:]:
            self.destroy(row, "archive full")

    def sweep(self) -> None:
        """Forks every holder released, forks past their TTL, and half-destroyed ones go."""
        if self.backend is None:
            return
        self.gauge_active()
        for row in self.registry.due(self.event_time):
            self.destroy(row, "released" if row["status"] == RELEASED else "expired")
        try:
            self.backend.maintain()
        except ForkBackendError as error:
            self.log.error("fork_maintenance_failed", error=str(error))

    def gauge_active(self) -> None:
        """Live forks by purpose for Prometheus, with each sweep; a purpose with none left shows 0."""
        active = self.registry.counts_by_purpose()
        for purpose, count in self.registry.counts_by_purpose(kept=True).items():
            active[purpose] = active.get(purpose, 0) + count
        for purpose in self.purposes_seen - set(active):
            self.active_gauge.labels(self.name, purpose).set(0)
        for purpose, count in active.items():
            self.active_gauge.labels(self.name, purpose).set(count)
        self.purposes_seen |= set(active)

    def destroy(self, row: dict, why: str) -> None:
        """Marked destroying first: a manager that dies half-way finishes the job at its next start."""
        self.registry.destroying(row["fork_id"])
        if row["path"]:
            try:
                self.backend.destroy(row["path"])
            except ForkBackendError as error:  # keep the row; the next sweep tries again
                self.log.error("fork_destroy_failed", fork_id=row["fork_id"], error=str(error))
                return
        self.registry.destroyed(row["fork_id"])
        self.announce(why, row["fork_id"], row["purpose"], row["requester"], "destroyed", row["ttl_s"], row["path"])
        self.log.info("fork_destroyed", fork_id=row["fork_id"], why=why)

    def remove_orphans(self) -> None:
        """Forks half-made when the manager died, and forks no registry row owns."""
        if self.backend is None:
            return
        for row in self.registry.unfinished():
            self.destroy(row, "orphaned")
        held = self.registry.held()
        for row in held:
            if not self.backend.exists(row["path"]):  # e.g. an exported snapshot dies with its holder
                self.destroy(row, "lost")
        known = {row["path"] for row in held}
        try:
            for location in self.backend.orphans(known):
                self.backend.destroy(location)
                self.log.warning("orphan_removed", location=location)
        except ForkBackendError as error:
            self.log.error("orphan_sweep_failed", error=str(error))

    def announce(self, event: str, fork_id: str, purpose: str, requester: str, status: str, ttl: int,
                 path: str) -> None:
        self.pub.publish(b"fork." + event.encode(), ForkEvent(fork_id=fork_id, event=event, purpose=purpose,
                                                              requester=requester, status=status, ttl_s=ttl,
                                                              path=path, et=self.event_time))


if __name__ == "__main__":
    main(ForkManager)
