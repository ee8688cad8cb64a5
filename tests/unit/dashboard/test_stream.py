"""The dashboard's live stream, in-process: numbered events, resuming without a gap or a duplicate, a fresh
snapshot when the missed events are gone, slow pages told to reconnect, and restarts noticed however brief."""
from __future__ import annotations

import asyncio
import json

import pytest

from meshtrader.dashboard import stream as streaming
from meshtrader.dashboard.stream import LAGGING, HealthWatch, Stream
from meshtrader.runtime.config import load_settings
from meshtrader.runtime.log import SilentLogger
from meshtrader.runtime.metrics import ServiceMetrics


@pytest.fixture
def stream(tmp_path) -> Stream:
    return Stream(load_settings(home=tmp_path), ServiceMetrics("dashboard"), SilentLogger("dashboard"))


def drained(queue: asyncio.Queue) -> list:
    items = []
    while not queue.empty():
        item = queue.get_nowait()
        items.append(item if item is LAGGING else json.loads(item))
    return items


def test_a_new_page_needs_a_snapshot_then_gets_every_event_numbered(stream):
    stream.publish("fill", {"n": 0})
    page: asyncio.Queue = asyncio.Queue()
    assert stream.join(page) is None and stream.seq == 1  # a snapshot stamped 1, then what follows it
    stream.publish("fill", {"n": 1})
    stream.publish("health", {"executor": {"state": "RUNNING"}})
    assert [(e["seq"], e["topic"]) for e in drained(page)] == [(2, "fill"), (3, "health")]


def test_a_page_that_reconnects_gets_exactly_what_it_missed(stream):
    for n in range(5):
        stream.publish("fill", {"n": n})
    page: asyncio.Queue = asyncio.Queue()
    assert stream.join(page, stream.epoch, after=2) == 2
    stream.publish("fill", {"n": 5})
    assert [e["seq"] for e in drained(page)] == [3, 4, 5, 6]


def test_a_page_from_another_dashboard_or_too_far_behind_starts_afresh(stream):
    stream.recent = streaming.deque(maxlen=3)
    for n in range(6):
        stream.publish("fill", {"n": n})
    assert stream.join(asyncio.Queue(), "another-epoch", after=5) is None
    assert stream.join(asyncio.Queue(), stream.epoch, after=1) is None  # 2 and 3 are gone from the window
    assert stream.join(asyncio.Queue(), stream.epoch, after=3) == 3  # 4, 5, 6 are still there
    assert stream.join(asyncio.Queue(), stream.epoch, after=7) is None  # numbers it cannot have seen


def test_a_page_too_slow_to_keep_up_is_told_to_reconnect_not_skipped(stream, monkeypatch):
    monkeypatch.setattr(streaming, "CLIENT_QUEUE", 3)
    slow, quick = asyncio.Queue(), asyncio.Queue()
    stream.join(slow)
    stream.join(quick)
    for n in range(3):
        stream.publish("fill", {"n": n})
        if n < 2:
            drained(quick)
    assert drained(slow)[-1] is LAGGING and slow not in stream.pages
    assert quick in stream.pages


def test_a_restart_shows_even_when_the_service_was_seen_stopped_between_two_looks(stream):
    watch = HealthWatch(stream, lambda: {})
    running = {"state": "RUNNING", "healthy": True, "pid": 100, "started": 1.0}
    assert watch.changes({"executor": running}) == {"executor": running}
    assert watch.changes({"executor": running}) == {}
    stopped = {"state": "STARTING", "healthy": False, "pid": None, "started": None}
    assert watch.changes({"executor": stopped}) == {"executor": stopped}
    again = {"state": "RUNNING", "healthy": True, "pid": 101, "started": 2.0}
    assert watch.changes({"executor": again}) == {"executor": {**again, "restarted": True}}
