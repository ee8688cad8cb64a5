"""The fork manager alone, on the tiger backend against a local server holding Tiger Cloud's fork contract
(the `tiger` fixture, in tests/conftest.py)."""
from __future__ import annotations

from tools.localmesh import free_port_base


def test_the_fork_manager_pools_slow_forks_and_hands_them_out_at_once(tiger, tmp_path):
    """The fork manager alone, on the tiger backend, keeps a spare fork made in advance."""
    import os
    import sqlite3
    import subprocess
    import sys
    import time

    import zmq
    from conftest import wait_for

    from meshtrader.bus import ReqClient
    from meshtrader.persistence.store import Store
    from meshtrader.runtime.config import REPO_ROOT, load_settings
    from meshtrader.runtime.log import Logger
    from meshtrader.wire.messages import CreateFork, ForkReplies, ForkReply

    contract, url = tiger
    base = free_port_base()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MESH_")}, "MESH_HOME": str(tmp_path),
           "MESH_PORT_BASE": str(base), "MESH_FORK_BACKEND": "tiger", "MESH_TIGER_API_URL": url,
           "MESH_TIGER_PROJECT_ID": "proj1", "MESH_TIGER_SERVICE_ID": "svc-parent", "MESH_TIGER_POLL_S": "0.05",
           "MESH_FORK_POOL_SIZE": "1", "MESH_REDIS_URL": "redis://127.0.0.1:1"}
    settings = load_settings(home=tmp_path, port_base=base)
    manager = subprocess.Popen([sys.executable, "-m", "meshtrader.services.forks"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    client = ReqClient(ctx, settings.endpoint("forks.rep"), ForkReplies, 5000, 2, Logger("t", "ERROR"))

    def statuses() -> list[tuple]:
        if not settings.db_path.exists():
            return []
        store = Store(settings.db_path, read_only=True)
        try:
            return [tuple(r) for r in store.query("SELECT fork_id, status, purpose FROM fork_tracking")]
        except sqlite3.OperationalError:  # the manager is still creating the schema
            return []
        finally:
            store.close()

    try:
        spare = wait_for(lambda: [r for r in statuses() if r[1] == "pooled"], 30, "a spare fork in the pool")[0]
        started = time.monotonic()
        reply = client.request(CreateFork(purpose="validation", requester="test", ttl_s=600))
        assert isinstance(reply, ForkReply) and reply.ok and reply.fork_id == spare[0]
        assert time.monotonic() - started < 2  # no waiting for READY: it was made in advance
        assert (spare[0], "active", "validation") in statuses()
        wait_for(lambda: [r for r in statuses() if r[1] == "pooled" and r[0] != spare[0]], 30, "the pool refilled")
        writable = client.request(CreateFork(purpose="incident", requester="test", writable=True))
        assert writable.ok and writable.fork_id not in {r[0] for r in statuses() if r[1] == "pooled"}
    finally:
        client.close()
        ctx.term()
        manager.terminate()
        manager.wait(10)
