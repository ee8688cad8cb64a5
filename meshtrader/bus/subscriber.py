"""SUB connected to any number of publishers: decodes and validates by topic, counts and drops what is
malformed, and detects sequence gaps per (source, topic)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from meshtrader.bus.curve import CurveKeys
from meshtrader.bus.frames import drain
from meshtrader.bus.policy import DRAIN_BUDGET_S, DRAIN_LIMIT, RCVHWM, SUB_RCVHWM
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics, topic_kind
from meshtrader.wire.codec import DecodeError, UnknownTopic, decode_stream, decoder_for
from meshtrader.wire.messages import Event


class Subscriber:
    """Calls `handler(topic, event)` for every valid message on the subscribed prefixes."""

    def __init__(self, ctx: zmq.Context, endpoints: Iterable[str], prefixes: Iterable[bytes],
                 handler: Callable[[bytes, Any], None], metrics: ServiceMetrics, log: Logger,
                 rcvhwm: int = SUB_RCVHWM, curve: CurveKeys | None = None) -> None:
        self.socket = ctx.socket(zmq.SUB)
        self.socket.setsockopt(RCVHWM, rcvhwm)
        self.socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.client(self.socket)
        for endpoint in endpoints:
            self.socket.connect(endpoint)
        for prefix in prefixes:
            self.socket.setsockopt(zmq.SUBSCRIBE, prefix)
        self.handler = handler
        self.metrics = metrics
        self.log = log
        self._last_seq: dict[tuple[str, bytes], int] = {}
        self._kinds: dict[bytes, str] = {}
        self.gaps = 0
        self.errors = 0

    def _kind(self, topic: bytes) -> str:
        kind = self._kinds.get(topic)
        if kind is None:
            kind = topic_kind(topic)
            if len(self._kinds) < 1000:
                self._kinds[topic] = kind
        return kind

    def on_readable(self) -> None:
        """Drain what is queued, up to DRAIN_LIMIT messages or DRAIN_BUDGET_S of handling, so one busy
        socket (or slow handlers: live orders wait on the exchange) cannot starve the others or the timers."""
        deadline = time.perf_counter() + DRAIN_BUDGET_S
        for frames in drain(self.socket, DRAIN_LIMIT):
            if len(frames) != 2:
                self._reject(frames[0], "expected [topic, payload]", f"{len(frames)} frames")
                continue
            topic, payload = frames
            try:
                decoded = decode_stream(topic, payload)
            except (UnknownTopic, *DecodeError) as error:
                self._reject(topic, "undecodable frame", str(error), payload)
                continue
            if decoded.__class__ is list:
                for event in decoded:
                    self._deliver(topic, event)
            else:
                self._deliver(topic, decoded)
            if time.perf_counter() > deadline:  # the rest stays queued: the socket is readable at the next turn
                break

    def _deliver(self, topic: bytes, event: Event) -> None:
        kind = self._kind(topic)
        self.metrics.message_in(kind)
        self._check_sequence(topic, event)
        started = time.perf_counter()
        try:
            self.handler(topic, event)
        except Exception as error:  # a bad message must not stop the service
            self.metrics.decode_error("handler")
            self.log.error("handler_failed", trace_id=event.tid, topic=topic.decode(errors="replace"),
                           source=event.src, error=repr(error))
        self.metrics.handler_latency(kind, time.perf_counter() - started)

    def _check_sequence(self, topic: bytes, event: Event) -> None:
        key = (event.src, topic)
        last = self._last_seq.get(key)
        self._last_seq[key] = event.seq
        if last is None or event.seq == last + 1:
            return
        if event.seq <= last:  # the publisher restarted and counts from 1 again
            self.log.info("publisher_restarted", source=event.src, topic=topic.decode(errors="replace"))
            return
        missed = event.seq - last - 1
        self.gaps += missed
        self.metrics.sequence_gap(event.src or "?", missed)
        self.log.warning("sequence_gap", source=event.src, topic=topic.decode(errors="replace"),
                         missed=missed, trace_id=event.tid)

    def _reject(self, topic: bytes, problem: str, detail: str, payload: bytes = b"") -> None:
        self.errors += 1
        kind = topic_kind(topic)
        self.metrics.decode_error(kind)
        source = _peek_source(payload)
        self.log.warning_once((topic[:64], problem), "malformed_frame_dropped", problem=problem,
                              topic=topic[:64].decode(errors="replace"), source=source, detail=detail[:200])

    def close(self) -> None:
        self.socket.close()


def _peek_source(payload: bytes) -> str:
    """Best effort: the `src` of a payload that failed validation, for the log line."""
    try:
        raw = decoder_for(dict).decode(payload)
        return str(raw.get("src", "?"))[:64]
    except Exception:
        return "?"
