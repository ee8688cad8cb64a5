"""What the bus tests read off real sockets: a recording handler, reading until a condition holds,
joining subscribers (slow joiners), and counters as /metrics shows them."""
from __future__ import annotations

import time
from collections.abc import Callable

import zmq

from meshtrader.bus import Publisher, Subscriber
from meshtrader.runtime.metrics import ServiceMetrics


class Recorder:
    """A subscriber's handler that keeps what it was handed."""

    def __init__(self) -> None:
        self.events: list[tuple[bytes, object]] = []

    def __call__(self, topic: bytes, event: object) -> None:
        self.events.append((topic, event))

    def on(self, topic: bytes) -> list:
        return [event for got, event in self.events if got == topic]


def read_until(subscriber: Subscriber, condition: Callable[[], object], what: str, limit_s: float = 20) -> None:
    """Let `subscriber` read whatever arrives until `condition` holds (the limit only turns a hang into a
    failure: nothing here depends on how fast it goes)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        if subscriber.socket.poll(50):
            subscriber.on_readable()


def join(publish: Callable[[], None], subscribers: list[tuple[Subscriber, Recorder]], topic: bytes) -> None:
    """Publish on `topic` until every subscriber has had one: a SUB's subscription reaches the PUB
    asynchronously, even over inproc, and what is sent before that is not for it."""
    deadline = time.monotonic() + 20
    while not all(recorder.on(topic) for _, recorder in subscribers):
        assert time.monotonic() < deadline, "subscribers never joined"
        publish()
        for subscriber, _ in subscribers:
            if subscriber.socket.poll(10):
                subscriber.on_readable()


def counted(metrics: ServiceMetrics, sample: str, **labels: str) -> float:
    """A counter's value as /metrics would show it, summed over the series matching `labels`."""
    return sum(s.value for family in metrics.collect() for s in family.samples
               if s.name == sample and labels.items() <= s.labels.items())


def publisher(ctx: zmq.Context, endpoint: str, sndhwm: int = 1000) -> Publisher:
    return Publisher(ctx, endpoint, "feed", ServiceMetrics("pub"), sndhwm=sndhwm)
