"""The tiger fork backend against a local server holding Tiger Cloud's fork contract (the `tiger` fixture,
in tests/conftest.py; the fork manager on it is tests/mesh/test_fork_manager.py)."""
from __future__ import annotations

import pytest

from meshtrader.forks.backends import ForkBackendError, TigerForks


def test_fork_waits_for_ready_and_is_deleted(tiger):
    contract, url = tiger
    backend = TigerForks(url, "proj1", "svc-parent", "LAST_SNAPSHOT", poll_s=0.01)
    fork = backend.create("fork-test-1")
    service_id = fork.details["service_id"]
    assert fork.location == f"tiger:{service_id}" and fork.details["host"] and fork.details["port"] == 5432
    assert contract.services[service_id]["status"] == "READY" and contract.services[service_id]["polls"] >= 4
    assert backend.orphans({fork.location}) == []
    backend.destroy(fork.location)
    assert service_id not in contract.services
    backend.destroy(fork.location)  # already gone: fine
    pitr = backend.create("fork-test-2", target_time="2026-11-22T00:00:00+00:00")
    assert pitr.details["strategy"] == "PITR"


def test_orphans_are_found_by_name(tiger):
    contract, url = tiger
    backend = TigerForks(url, "proj1", "svc-parent", poll_s=0.01)
    kept = backend.create("fork-kept")
    lost = backend.create("fork-lost")
    assert backend.orphans({kept.location}) == [lost.location]  # the parent is not ours: never touched


def test_contract_errors_are_clear(tiger, monkeypatch):
    contract, url = tiger
    with pytest.raises(ForkBackendError, match="404"):
        TigerForks(url, "proj1", "svc-missing", poll_s=0.01).create("fork-x")
    monkeypatch.setenv("TIGER_SECRET_KEY", "wrong")
    with pytest.raises(ForkBackendError, match="401"):
        TigerForks(url, "proj1", "svc-parent", poll_s=0.01).create("fork-y")
    monkeypatch.delenv("TIGER_SECRET_KEY")
    with pytest.raises(ForkBackendError, match="TIGER_SECRET_KEY"):
        TigerForks(url, "proj1", "svc-parent")
