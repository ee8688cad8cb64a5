"""PUB: binds its own endpoint (brokerless), stamps the envelope (source, per-topic sequence,
monotonic send time) and sends [topic, payload], one event or a batch of them."""
from __future__ import annotations

import time
from collections.abc import Sequence

import zmq

from meshtrader.bus.curve import Curve
from meshtrader.bus.policy import PUB_SNDHWM, SNDHWM, SNDMORE
from meshtrader.runtime.metrics import ServiceMetrics, topic_kind
from meshtrader.wire.codec import encode
from meshtrader.wire.messages import Event


class Publisher:
    """Never blocks: past a subscriber's high-water mark ZeroMQ drops that subscriber's frames (policy.py),
    which it counts as sequence gaps; the others, and this service, go on at full speed."""

    def __init__(self, ctx: zmq.Context, endpoint: str, source: str, metrics: ServiceMetrics,
                 sndhwm: int = PUB_SNDHWM, curve: Curve | None = None) -> None:
        self.socket = ctx.socket(zmq.PUB)
        self.socket.setsockopt(SNDHWM, sndhwm)
        self.socket.setsockopt(zmq.LINGER, 500)
        if curve is not None:
            curve.server(self.socket)
        self.socket.bind(endpoint)
        self.endpoint = endpoint
        self.source = source
        self.metrics = metrics
        self._seq: dict[bytes, int] = {}
        self._kinds: dict[bytes, str] = {}

    def publish(self, topic: bytes, message: Event) -> None:
        self._stamp(topic, (message,))
        self._send(topic, encode(message), 1)

    def publish_batch(self, topic: bytes, messages: Sequence[Event]) -> None:
        """Many events of one topic in one frame (a MessagePack array): one send and one encode for all,
        each event still numbered, so subscribers check gaps per event and hand them over one by one."""
        if messages:
            self._stamp(topic, messages)
            self._send(topic, encode(messages), len(messages))

    def _stamp(self, topic: bytes, messages: Sequence[Event]) -> None:
        seq = self._seq.get(topic, 0)
        now, source = time.time_ns(), self.source  # wall clock: a send time other hosts can compare (NTP)
        for message in messages:
            seq += 1
            message.src, message.seq, message.st = source, seq, now
        self._seq[topic] = seq

    def _send(self, topic: bytes, payload: bytes, count: int) -> None:
        send = self.socket.send
        send(topic, SNDMORE)
        send(payload, 0)
        kind = self._kinds.get(topic)
        if kind is None:
            kind = self._kinds[topic] = topic_kind(topic)
        message_out = self.metrics.message_out
        for _ in range(count):
            message_out(kind)

    def close(self) -> None:
        self.socket.close()
