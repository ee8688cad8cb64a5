"""The Lazy Pirate client: a request nobody answers is retried on a fresh socket and ends in None; a
stoppable one ends as soon as its service is told to stop, instead of sitting out its timeout."""
from __future__ import annotations

import io
import json
import threading

from meshtrader.bus import ReqClient
from meshtrader.runtime.log import Logger
from meshtrader.wire.messages import RiskReplies, RiskStatus


def events(stream: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in stream.getvalue().splitlines()]


def test_an_unanswered_request_is_retried_then_none(ctx, tmp_path):
    stream = io.StringIO()
    client = ReqClient(ctx, f"ipc://{tmp_path}/nobody", RiskReplies, 50, 2, Logger("t", "INFO", stream))
    assert client.request(RiskStatus()) is None
    assert events(stream) == ["request_timeout", "request_timeout"]
    client.close()


def test_a_stoppable_request_ends_once_its_service_stops(ctx, tmp_path):
    stream, stopping = io.StringIO(), threading.Event()
    client = ReqClient(ctx, f"ipc://{tmp_path}/stopped-peer", RiskReplies, 60_000, 1, Logger("t", "INFO", stream),
                       cancelled=stopping.is_set)
    threading.Timer(0.2, stopping.set).start()  # SIGTERM while the request waits (up to a minute)
    assert client.request(RiskStatus()) is None
    assert events(stream) == ["request_abandoned"]
    client.close()
