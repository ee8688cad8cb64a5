"""Prometheus metrics every service exposes on its own HTTP port (/metrics)."""
from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

LATENCY_BUCKETS = (20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3, 0.25, 1.0)


def topic_kind(topic: bytes) -> str:
    """The label for a topic: its first segment ('md', 'sig', 'fill', ...) keeps cardinality small."""
    return topic.split(b".", 1)[0].decode("ascii", "replace")[:16] or "?"


class ServiceMetrics:
    """The standard set: messages in/out, decode errors, sequence gaps, handler latency."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        labels = ["service", "kind"]
        self._in = Counter("mesh_messages_in_total", "messages received", labels, registry=self.registry)
        self._out = Counter("mesh_messages_out_total", "messages published", labels, registry=self.registry)
        self._errors = Counter("mesh_decode_errors_total", "frames that failed to decode or validate",
                               labels, registry=self.registry)
        self._gaps = Counter("mesh_sequence_gaps_total", "messages missed, from sequence numbers",
                             ["service", "source"], registry=self.registry)
        self._handler = Histogram("mesh_handler_seconds", "time to handle one message", ["service", "kind"],
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self.up = Gauge("mesh_up", "1 while the service runs", ["service"], registry=self.registry).labels(service)
        self._children: dict[tuple, object] = {}

    def _child(self, metric, *labels: str):
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.service, *labels)
        return child

    def message_in(self, kind: str) -> None:
        self._child(self._in, kind).inc()

    def message_out(self, kind: str) -> None:
        self._child(self._out, kind).inc()

    def decode_error(self, kind: str) -> None:
        self._child(self._errors, kind).inc()

    def sequence_gap(self, source: str, missed: int) -> None:
        self._child(self._gaps, source).inc(missed)

    def handler_latency(self, kind: str, seconds: float) -> None:
        self._child(self._handler, kind).observe(seconds)

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, ["service", *labels], registry=self.registry)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, ["service", *labels], registry=self.registry)

    def histogram(self, name: str, doc: str) -> Histogram:
        return Histogram(name, doc, ["service"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics from a daemon thread, off the message loop."""
        start_http_server(port, addr=host, registry=self.registry)
