"""The dashboard's live stream: the bus's relayed topics and the mesh's health changes, numbered, to browsers.

One WebSocket per page. A page that connects gets a snapshot of the mesh's state stamped with the stream's
sequence number, then every event after it, each with the next number: nothing falls between the two,
since the page joins the stream before the snapshot is read (events that the snapshot already shows are
harmless to apply twice). A page that reconnects says the epoch and the last number it saw, and gets the
events it missed from a window of recent ones, or a fresh snapshot when they are gone (the dashboard
restarted: a new epoch; or it was away too long). A page too slow to keep up is told to reconnect, which
resumes it from the window: the stream never skips silently.

The bus is subscribed from the dashboard's start, not when a page comes: a subscription takes a moment to
reach the publishers, and what they sent meanwhile would be in neither a first page's snapshot nor its
stream. The relayed topics are the low-rate ones (no ticks)."""
from __future__ import annotations

import asyncio
import json
import secrets
from collections import deque
from typing import Any

import zmq
import zmq.asyncio

from meshtrader.bus.curve import CurveKeys
from meshtrader.runtime.config import Settings
from meshtrader.runtime.log import Logger
from meshtrader.runtime.metrics import ServiceMetrics, topic_kind
from meshtrader.wire.codec import DecodeError, UnknownTopic, decode_event, to_json_ready

CLIENT_QUEUE = 5000  # events a page may fall behind before it is told to reconnect
RESUME_WINDOW = 20_000  # recent events kept for pages that reconnect
HEALTH_EVERY_S = 0.5  # while pages watch; else every IDLE_HEALTH_EVERY_S (a resuming page still gets the changes)
IDLE_HEALTH_EVERY_S = 5.0
LAGGING = None  # put in a page's queue when it fell too far behind


def relayed(settings: Settings) -> dict[str, tuple[str, list[bytes]]]:
    """What the dashboard relays, from the topology table: program -> (its PUB endpoint, topic prefixes)."""
    return {p.name: (settings.endpoint(p.endpoint_name("pub")), [prefix.encode() for prefix in p.relays])
            for p in settings.programs() if p.relays}


class Stream:
    """The numbered stream pages watch: the bus's relayed topics (one SUB socket to every publisher with
    topics to relay) and health changes the dashboard notices."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics, log: Logger) -> None:
        self.settings, self.metrics, self.log = settings, metrics, log
        self.epoch = secrets.token_hex(4)  # a restarted dashboard numbers afresh: pages must not resume across
        self.seq = 0
        self.recent: deque[tuple[int, str]] = deque(maxlen=RESUME_WINDOW)
        self.pages: set[asyncio.Queue] = set()

    # ----- the pages ----------------------------------------------------------------------------
    def join(self, queue: asyncio.Queue, epoch: str = "", after: int = -1) -> int | None:
        """Adds a page's queue to the stream. Resuming (its epoch, the last number it saw): the missed events
        are queued first and the number it resumes from is returned; otherwise None (it needs a snapshot,
        to be stamped with `self.seq` as it is now). Missing more than a page may queue: a snapshot too."""
        oldest = self.recent[0][0] if self.recent else self.seq + 1
        resumable = epoch == self.epoch and oldest - 1 <= after <= self.seq and self.seq - after < CLIENT_QUEUE
        if resumable:
            for seq, text in self.recent:
                if seq > after:
                    queue.put_nowait(text)
        self.pages.add(queue)
        return after if resumable else None

    def leave(self, queue: asyncio.Queue) -> None:
        self.pages.discard(queue)

    def publish(self, topic: str, event: Any) -> None:
        """Numbers an event and hands it to every page; a page whose queue is full is told to reconnect."""
        self.seq += 1
        text = json.dumps({"seq": self.seq, "topic": topic, "event": event})
        self.recent.append((self.seq, text))
        for queue in list(self.pages):
            if queue.qsize() >= CLIENT_QUEUE - 1:
                self.pages.discard(queue)
                queue.put_nowait(LAGGING)
            else:
                queue.put_nowait(text)

    # ----- the bus ------------------------------------------------------------------------------
    async def relay_bus(self) -> None:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            if self.settings.curve_keys:
                CurveKeys.load(self.settings.curve_keys).client(sock)
            sources = relayed(self.settings)
            for endpoint, _ in sources.values():
                for instance in self.settings.instances(endpoint):
                    sock.connect(instance)
            for prefix in sorted({prefix for _, prefixes in sources.values() for prefix in prefixes}):
                sock.setsockopt(zmq.SUBSCRIBE, prefix)
            while True:
                if await sock.poll(1000):
                    self.relay(await sock.recv_multipart())
        finally:
            sock.close()
            ctx.term()

    def relay(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.metrics.decode_error("?")
            return
        try:
            event = decode_event(frames[0], frames[1])
        except (UnknownTopic, *DecodeError):
            self.metrics.decode_error(topic_kind(frames[0]))
            return
        self.metrics.message_in(topic_kind(frames[0]))
        self.publish(frames[0].decode(), to_json_ready(event))


class HealthWatch:
    """Looks at the services twice a second while pages watch and streams what changed: a state, health,
    or a new process (a crash and restart shows even when it lasted less than a look apart: the pid and
    the start time differ)."""

    def __init__(self, stream: Stream, look) -> None:
        self.stream, self.look = stream, look
        self.seen: dict[str, tuple] = {}
        self.pids: dict[str, int] = {}  # each service's last process seen (kept while it has none, stopped)

    def changes(self, services: dict[str, dict]) -> dict[str, dict]:
        changed = {}
        for name, service in services.items():
            key = (service.get("state"), service.get("healthy"), service.get("pid"), service.get("started"))
            if self.seen.get(name) == key:
                continue
            self.seen[name] = key
            changed[name] = service
            pid = service.get("pid")
            if pid:
                if self.pids.get(name, pid) != pid:
                    changed[name] = {**service, "restarted": True}
                self.pids[name] = pid
        return changed

    async def run(self) -> None:
        while True:
            changed = self.changes(await asyncio.to_thread(self.look))
            if changed:
                self.stream.publish("health", changed)
            await asyncio.sleep(HEALTH_EVERY_S if self.stream.pages else IDLE_HEALTH_EVERY_S)
