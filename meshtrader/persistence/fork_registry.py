"""The fork registry: every read and write of `fork_tracking`, the one record of the mesh's forks.

A fork's life: `creating` (registered, the backend at work) -> `active` (handed out; `pooled` while a
spare made in advance waits for a requester) -> `released` (every holder said it is done with it) ->
`destroying` -> `destroyed`. The row stays after the fork has gone: its purpose, requester and
results are the record of what was run on it.

A read-only fork may be shared: `shared` counts the holders after the first. A holder that is done
calls `release`; when every holder has, the fork is `released` and the fork manager destroys it at
its next sweep. A kept fork (an incident, one the narrator found interesting) is never released by
its holders: it stays until its keep TTL ends or the archive is full.
"""
from __future__ import annotations

import json
import time
from typing import Any

from meshtrader.persistence.store import Store

CREATING, ACTIVE, POOLED, RELEASED, DESTROYING, DESTROYED = (
    "creating", "active", "pooled", "released", "destroying", "destroyed")
LIVE = (CREATING, ACTIVE)  # what counts against MESH_MAX_FORKS (kept forks apart)
HELD = (ACTIVE, POOLED, RELEASED)  # a backend fork exists for these
SUMMARY_COLUMNS = "fork_id, backend, purpose, requester, status, created_et, ttl_s, kept, cost_estimate, results"


def _results(raw: str | None) -> dict:
    return json.loads(raw) if raw else {}


class ForkRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ----- reading ----------------------------------------------------------------------------------
    def listing(self, limit: int | None = None) -> list[dict]:
        """Every fork, newest first, destroyed ones included (`mesh forks`, the fork manager's ListForks)."""
        sql = "SELECT * FROM fork_tracking ORDER BY created_at DESC"
        return self.store.records(sql + " LIMIT ?", (limit,)) if limit else self.store.records(sql)

    def summaries(self, limit: int) -> list[dict]:
        """The newest forks for `mesh status` and the dashboard: the keys of their results, not the results."""
        return [{**dict(r), "results": sorted(_results(r["results"]))} for r in self.store.query(
            f"SELECT {SUMMARY_COLUMNS} FROM fork_tracking ORDER BY created_at DESC LIMIT ?", (limit,))]

    def get(self, fork_id: str) -> dict | None:
        rows = self.store.query("SELECT * FROM fork_tracking WHERE fork_id=?", (fork_id,))
        return dict(rows[0]) if rows else None

    def active(self, fork_id: str) -> dict | None:
        rows = self.store.query("SELECT * FROM fork_tracking WHERE fork_id=? AND status=?", (fork_id, ACTIVE))
        return dict(rows[0]) if rows else None

    def results(self, fork_id: str) -> dict:
        return _results(self.store.scalar("SELECT results FROM fork_tracking WHERE fork_id=?", (fork_id,)))

    def live_count(self) -> int:
        """Forks being made or in use, kept ones apart: what MESH_MAX_FORKS limits."""
        return self.store.scalar("SELECT COUNT(*) FROM fork_tracking WHERE status IN (?, ?) AND kept=0", LIVE) or 0

    def counts_by_purpose(self, statuses: tuple[str, ...] = LIVE, kept: bool = False) -> dict[str, int]:
        """How many forks of each purpose are in these states (by default: the ones the limit counts)."""
        marks = ",".join("?" * len(statuses))
        return {r[0]: r[1] for r in self.store.query(
            f"SELECT purpose, COUNT(*) FROM fork_tracking WHERE status IN ({marks}) AND kept=? GROUP BY purpose "
            "ORDER BY purpose", (*statuses, int(kept)))}

    def pooled_count(self) -> int:
        return self.store.scalar("SELECT COUNT(*) FROM fork_tracking WHERE status=?", (POOLED,)) or 0

    def oldest_pooled(self) -> dict | None:
        rows = self.store.query("SELECT * FROM fork_tracking WHERE status=? ORDER BY created_at LIMIT 1", (POOLED,))
        return dict(rows[0]) if rows else None

    def shareable(self, purpose: str, created_since_et: int) -> dict | None:
        """The newest active read-only fork of this purpose made at or after this event time."""
        rows = self.store.query("SELECT * FROM fork_tracking WHERE status=? AND writable=0 AND purpose=? AND "
                                "created_et >= ? ORDER BY created_at DESC LIMIT 1",
                                (ACTIVE, purpose, created_since_et))
        return dict(rows[0]) if rows else None

    def kept(self) -> list[dict]:
        """Kept forks still there, newest first."""
        return self.store.records(
            "SELECT * FROM fork_tracking WHERE status=? AND kept=1 ORDER BY created_at DESC", (ACTIVE,))

    def due(self, event_time: int) -> list[dict]:
        """Forks to destroy now: released by every holder, past their TTL, or left half-destroyed."""
        return self.store.records(
            "SELECT * FROM fork_tracking WHERE (status=? AND kept=0) OR (status=? AND expires_et <= ?) OR status=? "
            "ORDER BY created_at", (RELEASED, ACTIVE, event_time, DESTROYING))

    def unfinished(self) -> list[dict]:
        """Forks a manager was making or destroying when it died."""
        return self.store.records(
            "SELECT * FROM fork_tracking WHERE status IN (?, ?)", (CREATING, DESTROYING))

    def held(self) -> list[dict]:
        """Forks the registry says exist in the backend."""
        marks = ",".join("?" * len(HELD))
        return self.store.records(f"SELECT * FROM fork_tracking WHERE status IN ({marks})", HELD)

    # ----- writing ----------------------------------------------------------------------------------
    def register(self, fork_id: str, backend: str, parent: str, purpose: str, requester: str, created_et: int,
                 ttl_s: int, expires_et: int, writable: bool, kept: bool = False) -> None:
        """A fork about to be made (status `creating`): a manager dying now leaves a row to clean up after."""
        self.store.execute(
            "INSERT INTO fork_tracking(fork_id, backend, parent, purpose, requester, path, created_at, created_et,"
            " ttl_s, expires_et, status, writable, kept) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (fork_id, backend, parent, purpose, requester, "", time.time(), created_et, ttl_s, expires_et, CREATING,
             int(writable), int(kept)))

    def located(self, fork_id: str, path: str, cost_estimate: str) -> None:
        self.store.execute("UPDATE fork_tracking SET path=?, cost_estimate=? WHERE fork_id=?",
                           (path, cost_estimate, fork_id))

    def set_status(self, fork_id: str, status: str, results: dict) -> None:
        """A new status, and the results replaced (a fork just made records how it was made)."""
        self.store.execute("UPDATE fork_tracking SET status=?, results=? WHERE fork_id=?",
                           (status, json.dumps(results, default=str), fork_id))

    def pooled(self, fork_id: str, path: str, details: dict) -> None:
        """A spare made in advance is ready."""
        self.store.execute("UPDATE fork_tracking SET path=?, status=?, results=? WHERE fork_id=?",
                           (path, POOLED, json.dumps(details, default=str), fork_id))

    def hand_out(self, fork_id: str, purpose: str, requester: str, ttl_s: int, expires_et: int,
                 cost_estimate: str) -> None:
        """A pooled spare becomes a requester's fork."""
        self.store.execute("UPDATE fork_tracking SET purpose=?, requester=?, status=?, ttl_s=?, expires_et=?, "
                           "cost_estimate=? WHERE fork_id=?",
                           (purpose, requester, ACTIVE, ttl_s, expires_et, cost_estimate, fork_id))

    def share(self, fork_id: str, expires_et: int) -> None:
        """One more holder; the TTL stretched to cover it."""
        self.store.execute("UPDATE fork_tracking SET shared=shared+1, expires_et=? WHERE fork_id=?",
                           (expires_et, fork_id))

    def keep(self, fork_id: str, expires_et: int, ttl_s: int) -> bool:
        """Kept longer and apart from the working forks; a fork released but not yet destroyed is kept too."""
        with self.store.transaction() as db:
            found = db.execute("SELECT 1 FROM fork_tracking WHERE fork_id=? AND status IN (?, ?)",
                               (fork_id, ACTIVE, RELEASED)).fetchone()
            if found:
                db.execute("UPDATE fork_tracking SET expires_et=?, ttl_s=?, kept=1, status=? WHERE fork_id=?",
                           (expires_et, ttl_s, ACTIVE, fork_id))
        return bool(found)

    def release(self, fork_id: str, holder: str) -> bool:
        """A holder is done with a fork. Once every holder (1 + shared) is, the fork is `released`, unless it
        is kept. Returns whether it was released by this call."""
        with self.store.transaction() as db:
            row = db.execute("SELECT results FROM fork_tracking WHERE fork_id=? AND status=?",
                             (fork_id, ACTIVE)).fetchone()
            if row is None:
                return False
            results = _results(row[0])
            released_by = [*results.get("released_by", []), holder]
            db.execute("UPDATE fork_tracking SET results=? WHERE fork_id=?",
                       (json.dumps({**results, "released_by": released_by}, default=str), fork_id))
            # The condition is checked again by the UPDATE: a holder added meanwhile keeps the fork.
            db.execute("UPDATE fork_tracking SET status=? WHERE fork_id=? AND status=? AND kept=0 AND shared < ?",
                       (RELEASED, fork_id, ACTIVE, len(released_by)))
            done = db.execute("SELECT status FROM fork_tracking WHERE fork_id=?", (fork_id,)).fetchone()
        return done is not None and done[0] == RELEASED

    def destroying(self, fork_id: str) -> None:
        self.store.execute("UPDATE fork_tracking SET status=? WHERE fork_id=?", (DESTROYING, fork_id))

    def destroyed(self, fork_id: str) -> None:
        self.store.execute("UPDATE fork_tracking SET status=?, destroyed_at=? WHERE fork_id=?",
                           (DESTROYED, time.time(), fork_id))

    def merge_results(self, fork_id: str, results: dict[str, Any], accumulate: tuple[str, ...] = ()) -> None:
        """Add keys to a fork's recorded results (JSON), keeping the others. The lists under `accumulate` are
        joined to those recorded, not replaced: a shared fork used twice keeps what both uses were for."""
        with self.store.transaction() as db:
            row = db.execute("SELECT results FROM fork_tracking WHERE fork_id=?", (fork_id,)).fetchone()
            recorded = _results(row[0]) if row else {}
            for key in accumulate:
                results = {**results, key: [*dict.fromkeys([*recorded.get(key, []), *results.get(key, [])])]}
            merged = {**recorded, **results}
            db.execute("UPDATE fork_tracking SET results=? WHERE fork_id=?", (json.dumps(merged, default=str), fork_id))
