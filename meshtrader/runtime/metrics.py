"""Prometheus metrics every service exposes on its own HTTP port (/metrics).

Counters and histograms are counted on the message path, so they are plain numbers owned by the
service's one loop thread and turned into Prometheus families only when /metrics is scraped: no lock,
no label lookup and no prometheus_client call per message (those cost a tenth of a hop's CPU). The scrape
thread reads a copy; a count read mid-update is at most one message behind. Gauges, set a few times
a second at most (from timers, never per message), are prometheus_client's own; so is the process
collector (CPU, memory, descriptors, start time: read from /proc at scrape).

Names follow Prometheus' conventions: `mesh_` first, the unit last and in base units (`_seconds`,
`_ratio` for fractions), counters end in `_total`, latencies are histograms. Money carries its unit in the
name as `_usdt` (`mesh_equity_usdt`): the books keep every amount in the quote asset USDT
(meshtrader.domain.money), Prometheus has no base unit for money, and a `currency` label would let a
query add one currency to another silently, where series of differing names are not summed by accident.
Every series is labelled by the service that exports it (`service`); Prometheus adds `instance` (and the
scrape target's `service`, which the deploy/ configuration gives to `up` and the process metrics)."""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3, 0.25, 1.0)
# a request to an exchange over the internet: tens of milliseconds to the client's timeout
REMOTE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# a fork: a file clone in milliseconds, a PostgreSQL template copy in seconds, a cloud fork in minutes
FORK_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0)

Named = TypeVar("Named", "LoopCounter", "LoopHistogram", Gauge)


def topic_kind(topic: bytes) -> str:
    """The label for a topic: its first segment ('md', 'sig', 'fill', ...) keeps cardinality small."""
    return topic.split(b".", 1)[0].decode("ascii", "replace")[:16] or "?"


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # one per bucket, the last for +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class LoopCounter:
    """A labelled counter counted by the loop thread: `labels(...).inc()`, as prometheus_client's."""

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...]) -> None:
        self.name, self.doc, self.labelnames = name.removesuffix("_total"), doc, labelnames
        self.children: dict[tuple[str, ...], CounterChild] = {}

    def labels(self, *values: str) -> CounterChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = CounterChild()
        return child

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, child in list(self.children.items()):
            family.add_metric(values, child.value)
        return family


class LoopHistogram:
    """A labelled histogram observed by the loop thread: `labels(...).observe(seconds)`."""

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...],
                 buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name, self.doc, self.labelnames, self.bounds = name, doc, labelnames, buckets
        self.children: dict[tuple[str, ...], HistogramChild] = {}

    def labels(self, *values: str) -> HistogramChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = HistogramChild(self.bounds)
        return child

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, child in list(self.children.items()):
            counts, running, buckets = list(child.counts), 0, []
            for bound, count in zip((*map(str, self.bounds), "+Inf"), counts, strict=True):
                running += count
                buckets.append((bound, running))
            family.add_metric(values, buckets, child.sum)
        return family


class ServiceMetrics:
    """The standard set: messages in/out, decode errors, sequence gaps, handler latency; and the
    service's own counters, histograms and gauges."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry()
        self._loop_metrics: list[LoopCounter | LoopHistogram] = []
        self._by_name: dict[str, LoopCounter | LoopHistogram | Gauge] = {}
        self._in = self.counter("mesh_messages_in_total", "messages received", ("kind",))
        self._out = self.counter("mesh_messages_out_total", "messages published", ("kind",))
        self._errors = self.counter("mesh_decode_errors_total", "frames that failed to decode or validate", ("kind",))
        self._gaps = self.counter("mesh_sequence_gaps_total", "messages missed, from sequence numbers", ("source",))
        self._handler = self.histogram("mesh_handler_seconds", "time to handle one message", ("kind",))
        self.up = self.gauge("mesh_up", "1 while the service runs").labels(service)
        ProcessCollector(registry=self.registry)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """Called by the /metrics thread at each scrape."""
        for metric in list(self._loop_metrics):
            yield metric.family()

    def describe(self) -> list[Metric]:
        return []  # families are made at scrape time; no name clash to check up front

    def message_in(self, kind: str) -> None:
        self._in.labels(self.service, kind).inc()

    def message_out(self, kind: str) -> None:
        self._out.labels(self.service, kind).inc()

    def decode_error(self, kind: str) -> None:
        self._errors.labels(self.service, kind).inc()

    def sequence_gap(self, source: str, missed: int) -> None:
        self._gaps.labels(self.service, source).inc(missed)

    def handler_latency(self, kind: str, seconds: float) -> None:
        self._handler.labels(self.service, kind).observe(seconds)

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> LoopCounter:
        """Labelled by the service first, as every mesh metric: `.labels(service, *labels).inc()`."""
        return self._named(name, lambda: LoopCounter(name, doc, ("service", *labels)))

    def histogram(self, name: str, doc: str, labels: tuple[str, ...] = (),
                  buckets: tuple[float, ...] = LATENCY_BUCKETS) -> LoopHistogram:
        """Seconds, labelled by the service first: `.labels(service, *labels).observe(seconds)`."""
        return self._named(name, lambda: LoopHistogram(name, doc, ("service", *labels), buckets))

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return self._named(name, lambda: Gauge(name, doc, ["service", *labels], registry=self.registry))

    def _named(self, name: str, make: Callable[[], Named]) -> Named:
        """The metric of that name, made at the first ask: two parts of a process that count the same
        thing (two venues of one executor) share one series instead of exporting it twice."""
        metric = self._by_name.get(name)
        if metric is None:
            metric = self._by_name[name] = make()
            if not isinstance(metric, Gauge):
                self._loop_metrics.append(metric)
        return metric

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve /metrics from a daemon thread, off the message loop."""
        start_http_server(port, addr=host, registry=self.registry)
