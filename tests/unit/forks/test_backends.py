"""The SQLite fork backend."""
from __future__ import annotations

from pathlib import Path

from meshtrader.persistence.store import Store


def test_sqlite_fork_is_a_consistent_clone_of_one_snapshot(tmp_path):
    from meshtrader.forks.backends import SqliteForks

    live = Store(tmp_path / "mesh.db")
    live.insert_many("pr_events", ("kind", "title", "created_at"), [("k", "t", 1.0)])
    (tmp_path / "forks").mkdir()
    backend = SqliteForks(tmp_path / "mesh.db", tmp_path / "forks", golden_max_age_s=60)
    first, second = backend.create("fork-a"), backend.create("fork-b")
    assert first.details["snapshot_ms"] > 0 and second.details["snapshot_ms"] == 0  # the golden snapshot is reused
    for fork in (first, second):
        assert fork.details["method"] in ("reflink", "copy_file_range", "copy")
        forked = Store(fork.location, read_only=True)
        assert forked.scalar("PRAGMA integrity_check") == "ok" and forked.scalar("SELECT COUNT(*) FROM pr_events") == 1
        forked.close()
    (tmp_path / "forks" / "fork-stray.db").write_bytes(b"x")
    assert backend.orphans({first.location, second.location}) == [str(tmp_path / "forks" / "fork-stray.db")]
    backend.destroy(first.location)
    assert not Path(first.location).exists() and Path(second.location).exists()
    live.close()
