"""PUB: binds its own endpoint (brokerless), stamps the envelope (source, per-topic sequence,
monotonic send time) and sends [topic, payload]."""
from __future__ import annotations

import time

import zmq

from meshtrader.bus.policy import HWM, SNDMORE
from meshtrader.runtime.metrics import ServiceMetrics, topic_kind
from meshtrader.wire.codec import encode
from meshtrader.wire.messages import Event


class Publisher:
    def __init__(self, ctx: zmq.Context, endpoint: str, source: str, metrics: ServiceMetrics) -> None:
        self.socket = ctx.socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, HWM)
        self.socket.setsockopt(zmq.LINGER, 500)
        self.socket.bind(endpoint)
        self.endpoint = endpoint
        self.source = source
        self.metrics = metrics
        self._seq: dict[bytes, int] = {}
        self._kinds: dict[bytes, str] = {}

    def publish(self, topic: bytes, message: Event) -> None:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        message.src = self.source
        message.seq = seq
        message.st = time.monotonic_ns()
        send = self.socket.send
        send(topic, SNDMORE)
        send(encode(message), 0)
        kind = self._kinds.get(topic)
        if kind is None:
            kind = self._kinds[topic] = topic_kind(topic)
        self.metrics.message_out(kind)

    def close(self) -> None:
        self.socket.close()
