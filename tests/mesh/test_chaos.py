"""Chaos, bounded: kill -9 the executor while it fills, the feed, two services at once and Redis on one
fast-replaying mesh; supervisord restarts each, the mesh is healthy again, every death is narrated and
alerted, a program that keeps dying is reported as a crash loop, and the books reconcile exactly.
Recovery times are printed (never asserted: they depend on the machine). The long form: bench/chaos.py."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import running_mesh, wait_for

from bench.chaos import CHAOS_ENV, books_problems, filling, kill_9


@pytest.fixture(scope="module")
def chaos_mesh(tmp_path_factory, alert_sink):
    with running_mesh(Path(tmp_path_factory.mktemp("chaos")),
                      {**CHAOS_ENV, "MESH_ALERT_WEBHOOK_URL": alert_sink.url + "/hook"}) as mesh:
        yield mesh


def narrated(mesh, kind: str) -> set[str]:
    return {title for (title,) in mesh.query("SELECT title FROM pr_events WHERE kind=?", (kind,))}


def alerted(sink, level: str) -> set[str]:
    return {body["title"] for path, body in sink.received if path == "/hook" and body["level"] == level}


def test_kill_9_each_in_turn_two_at_once_and_redis_loses_nothing(chaos_mesh, alert_sink):
    mesh = chaos_mesh
    wait_for(lambda: mesh.trade_count() >= 3, 90, "the first trades")
    steps = [(["executor"], filling(mesh)), (["feed"], None), (["strategy_momentum", "risk"], None), (["redis"], None)]
    for programs, when in steps:
        print(f"\nrecovery after kill -9 of {' + '.join(programs)}: {kill_9(mesh, programs, when):.2f} s")
    killed = {program for programs, _ in steps for program in programs}
    wait_for(lambda: narrated(mesh, "service_died") >= {f"{p} died" for p in killed}, 30, "every death narrated")
    wait_for(lambda: alerted(alert_sink, "warning") >= {f"{p} died" for p in killed}, 30, "every death alerted")
    assert any("terminated by SIGKILL" in body for (body,) in
               mesh.query("SELECT body FROM pr_events WHERE kind='service_died' AND title='executor died'"))
    before = mesh.trade_count()
    wait_for(lambda: mesh.trade_count() > before, 90, "trades after the chaos")
    mesh.quiesce()
    try:
        assert books_problems(mesh) == []
    finally:
        mesh.ctl("start", "feed")


def test_a_program_that_keeps_dying_is_reported_as_a_crash_loop(chaos_mesh, alert_sink):
    mesh = chaos_mesh
    for _ in range(3):  # the watchdog's CRASH_LOOP_EXITS within its window
        kill_9(mesh, ["dashboard"])
    wait_for(lambda: "dashboard is crash-looping" in narrated(mesh, "crash_loop"), 30, "the crash loop narrated")
    wait_for(lambda: "dashboard is crash-looping" in alerted(alert_sink, "critical"), 30, "the crash loop alerted")
    services = mesh.status()["services"]
    assert services["dashboard"]["crash_loop"] is True
    assert not any(s["crash_loop"] for name, s in services.items() if name != "dashboard")
